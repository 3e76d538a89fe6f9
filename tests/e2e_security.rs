//! TLS, server identity and trust on first use, through the real client and CLI.

mod common;

use common::*;
use std::process::Command;
use velocity::client::trust::{NewHost, Trust};
use velocity::client::{Client, ClientError, ConnectOptions};
use velocity::protocol::{ServerInfo, Value};
use velocity::server::datadir::{cert_fingerprint, fingerprint_string};

fn opts(
    s: &Server,
    known_hosts: &std::path::Path,
    new_host: NewHost,
    pinned: Option<String>,
) -> ConnectOptions {
    let mut o = s.options();
    o.trust = Trust { known_hosts: Some(known_hosts.to_owned()), new_host, pinned };
    o
}

fn status_value(c: &mut Client, name: &str) -> Value {
    let st = c.execute("SHOW STATUS").unwrap();
    st.rows.into_iter().find(|r| r[0] == Value::Bytes(name.as_bytes().to_vec())).unwrap().swap_remove(1)
}

#[test]
fn tls_session_and_the_fingerprint_is_the_certificates_key() {
    let s = Server::start(2);
    let mut c = s.client();
    assert_eq!(status_value(&mut c, "tls"), Value::Bytes(b"TLS 1.3".to_vec()));
    let info = c.server_info().clone();
    assert_ne!(info.flags & ServerInfo::FLAG_TLS, 0);
    let cert = std::fs::read_to_string(s.data_dir.join("identity.crt")).unwrap();
    assert_eq!(cert_fingerprint(&cert).unwrap(), info.fingerprint);
    // `velocityd fingerprint` prints the same, for checking out of band.
    let out =
        Command::new(bin("velocityd")).args(["fingerprint", "--data-dir"]).arg(&s.data_dir).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fingerprint_string(&info.fingerprint));
    // The identity files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["identity.key", "identity.crt", "auth_salt", "users"] {
        let mode = std::fs::metadata(s.data_dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[test]
fn plaintext_and_tls_mismatches_fail_with_clear_errors() {
    let tls = Server::start(1);
    let mut o = tls.options();
    o.tls = false;
    let e = Client::open(&o).err().expect("plaintext client against TLS server");
    assert!(e.to_string().contains("answered with TLS"), "{e}");

    let plain = Server::start_with(1, &["--plaintext"]);
    let mut o = plain.options();
    o.tls = true;
    let e = Client::open(&o).err().expect("TLS client against plaintext server");
    assert!(e.to_string().contains("--plaintext"), "{e}");
    // And plaintext works when both agree.
    let mut c = plain.client();
    assert_eq!(status_value(&mut c, "tls"), Value::Bytes(b"off".to_vec()));
}

#[test]
fn trust_on_first_use_pinning_and_a_changed_key() {
    let s = Server::start(1);
    let kh = temp_dir("kh").join("known_hosts");
    // First contact: refused unless accepted.
    match Client::open(&opts(&s, &kh, NewHost::Refuse, None)) {
        Err(ClientError::Trust(m)) => assert!(m.contains("unknown server") && m.contains("SHA256:"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    // Asked, and the answer is no: refused and nothing recorded.
    assert!(Client::open(&opts(&s, &kh, NewHost::Ask(Box::new(|_, _| false)), None)).is_err());
    assert!(!kh.exists());
    // Asked, and yes: recorded.
    let c = Client::open(&opts(
        &s,
        &kh,
        NewHost::Ask(Box::new(|h, fp| h.starts_with("127.0.0.1:") && fp.starts_with("SHA256:"))),
        None,
    ))
    .unwrap();
    let fp = fingerprint_string(&c.server_info().fingerprint);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(text.trim(), format!("127.0.0.1:{} {fp}", s.addr.port()));
    // Known now: no question asked.
    Client::open(&opts(&s, &kh, NewHost::Refuse, None)).unwrap();
    // Pinning: the right key passes even when unknown; a wrong one fails.
    let other_kh = kh.with_file_name("other");
    Client::open(&opts(&s, &other_kh, NewHost::Refuse, Some(fp.clone()))).unwrap();
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    assert!(matches!(
        Client::open(&opts(&s, &other_kh, NewHost::Refuse, Some(wrong))),
        Err(ClientError::Trust(_))
    ));

    // Another server (another data directory, another key) on the same port: refused, loudly,
    // even with --accept-new-host.
    let port = s.addr.port();
    drop(s);
    let dir = temp_dir("data2");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    let s2 = Server::start_at(dir, 1, &[], Some(port));
    match Client::open(&opts(&s2, &kh, NewHost::Accept, None)) {
        Err(ClientError::Trust(m)) => {
            assert!(m.contains("HAS CHANGED") && m.contains(&fp), "{m}");
        }
        other => panic!("a changed key was accepted: {:?}", other.is_ok()),
    }
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text, "the known-hosts file is unchanged");

    // The CLI says the same and exits non-zero.
    let out = run_with_stdin(
        Command::new(bin("velocity-cli"))
            .args([
                "--port",
                &port.to_string(),
                "-u",
                "alice",
                "--password-stdin",
                "--accept-new-host",
                "-c",
                "SHOW STATUS",
            ])
            .arg("--known-hosts")
            .arg(&kh),
        PASSWORD,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HAS CHANGED"));
    // With the new key pinned, the CLI connects.
    let fp2 = fingerprint_string(
        &Client::open(&opts(&s2, &other_kh, NewHost::Accept, None)).unwrap().server_info().fingerprint,
    );
    let out = run_with_stdin(
        Command::new(bin("velocity-cli"))
            .args([
                "--port",
                &port.to_string(),
                "-u",
                "alice",
                "--password-stdin",
                "--fingerprint",
                &fp2,
                "-c",
                "SHOW STATUS",
            ])
            .arg("--known-hosts")
            .arg(&kh),
        PASSWORD,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn operators_own_certificate() {
    let dir = temp_dir("own-cert");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap().self_signed(&key).unwrap();
    let (cp, kp) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&cp, cert.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    let data = temp_dir("own-data");
    add_user(&data, "alice", PASSWORD, "readwrite");
    let s =
        Server::start_in(data, 1, &["--tls-cert", cp.to_str().unwrap(), "--tls-key", kp.to_str().unwrap()]);
    let c = s.client();
    assert_eq!(c.server_info().fingerprint, cert_fingerprint(&cert.pem()).unwrap());
    let out = Command::new(bin("velocityd")).args(["fingerprint", "--tls-cert"]).arg(&cp).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fingerprint_string(&c.server_info().fingerprint));
}
