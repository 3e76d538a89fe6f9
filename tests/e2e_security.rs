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

    // The CLI says the same and exits non-zero; with the new key pinned it connects.
    let cli = |trust: &[&str]| {
        run_with_stdin(
            Command::new(bin("velocity-cli"))
                .args(["--port", &port.to_string(), "-u", "alice", "--password-stdin", "-c", "SHOW STATUS"])
                .args(trust)
                .arg("--known-hosts")
                .arg(&kh),
            PASSWORD,
        )
    };
    let out = cli(&["--accept-new-host"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HAS CHANGED"));
    let fp2 = fingerprint_string(
        &Client::open(&opts(&s2, &other_kh, NewHost::Accept, None)).unwrap().server_info().fingerprint,
    );
    let out = cli(&["--fingerprint", &fp2]);
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

fn velocityd(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(bin("velocityd")).args(args).arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Retry `f` for up to 5 s: the server picks up changed user and key files within a second.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "condition not met within 5 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn api_key_login_and_revocation_without_restart() {
    use velocity::client::Credentials;
    // Waiting for the reload means failed logins; throttling has its own test.
    let s = Server::start_with(2, &["--login-fail-threshold", "0"]);
    let key = velocityd(&["apikey", "create", "--user", "alice"], &s.data_dir).trim().to_string();
    assert!(key.starts_with("vk_") && key.len() <= 128, "{key}");
    let ro_key = velocityd(&["apikey", "create", "--user", "reader"], &s.data_dir).trim().to_string();
    let mut c = eventually(|| s.connect(&Credentials::ApiKey(key.clone())).ok());
    c.execute("INSERT INTO kv (key, value) VALUES ('via', 'key')").unwrap();
    assert_eq!(status_value(&mut c, "user"), Value::Bytes(b"alice".to_vec()));
    let mut r = eventually(|| s.connect(&Credentials::ApiKey(ro_key.clone())).ok());
    assert_eq!(
        r.execute("DELETE FROM kv WHERE key = 'via'").unwrap_err().code(),
        Some(velocity::protocol::ErrorCode::Unauthorized)
    );
    // A wrong key fails like a wrong password.
    match s.connect(&Credentials::ApiKey("vk_00000000_nope".into())) {
        Err(ClientError::Auth { status, .. }) => assert_eq!(status, 1),
        other => panic!("{:?}", other.err()),
    }
    // Only the hash is stored.
    let stored = std::fs::read_to_string(s.data_dir.join("apikeys")).unwrap();
    assert!(!stored.contains(&key));
    let list = velocityd(&["apikey", "list"], &s.data_dir);
    let id = key.split('_').nth(1).unwrap();
    assert!(list.contains(id) && list.contains("alice"), "{list}");
    velocityd(&["apikey", "revoke", id], &s.data_dir);
    eventually(|| s.connect(&Credentials::ApiKey(key.clone())).err());
    // Other keys keep working.
    s.connect(&Credentials::ApiKey(ro_key)).unwrap();
}

fn codes(replies: Vec<velocity::client::Reply>) -> Vec<Option<velocity::protocol::ErrorCode>> {
    replies.into_iter().map(|r| r.err().map(|e| e.code)).collect()
}

#[test]
fn each_rate_limit_refuses_then_recovers() {
    use velocity::protocol::ErrorCode::RateLimited;
    let get = "SELECT COUNT(*) FROM kv".to_string();
    // Per connection: 5 at once, then refused; a refused write is not executed.
    let s = Server::start_with(2, &["--rate-limit-conn", "5:5"]);
    let mut c = s.client();
    let mut stmts = vec![get.clone(); 5];
    stmts.push("INSERT INTO kv (key, value) VALUES ('refused', 'x')".into());
    let got = codes(c.pipeline(&stmts).unwrap());
    assert_eq!(got[..5], [None; 5]);
    assert_eq!(got[5], Some(RateLimited));
    let mut other = s.client(); // another connection has its own bucket
    assert_eq!(other.execute("SELECT COUNT(*) FROM kv").unwrap().rows, vec![vec![Value::Int(0)]]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(codes(c.pipeline(&stmts[..5]).unwrap()), [None; 5]);
    let st = other.execute("SHOW STATS").unwrap();
    let rl =
        st.rows.iter().find(|r| r[0] == Value::Bytes(b"rate_limited".to_vec())).unwrap()[1].as_int().unwrap();
    assert!(rl >= 1);
    drop(s);

    // Per user (set with the user, enforced on each core; one core here): shared by the user's
    // connections, not by other users.
    let dir = temp_dir("rl-user");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    add_user(&dir, "reader", RO_PASSWORD, "readonly");
    let out = run_with_stdin(
        Command::new(bin("velocityd"))
            .args(["user", "add", "slow", "--password-stdin", "--rate-limit", "3:3", "--data-dir"])
            .arg(&dir),
        "slow-password",
    );
    assert!(out.status.success());
    let s = Server::start_in(dir, 1, &[]);
    let slow =
        velocity::client::Credentials::Password { user: "slow".into(), password: "slow-password".into() };
    let mut a = s.connect(&slow).unwrap();
    let mut b = s.connect(&slow).unwrap();
    assert_eq!(codes(a.pipeline(&vec![get.clone(); 2]).unwrap()), [None, None]);
    assert_eq!(codes(b.pipeline(&vec![get.clone(); 2]).unwrap()), [None, Some(RateLimited)]);
    assert!(s.client().execute(&get).is_ok(), "other users are not limited");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(codes(b.pipeline(&vec![get.clone(); 2]).unwrap()), [None, None]);
    drop(s);

    // Server-wide: shared by everyone.
    let s = Server::start_with(1, &["--rate-limit-global", "4:4"]);
    let mut a = s.client();
    let mut b = s.client();
    assert_eq!(codes(a.pipeline(&vec![get.clone(); 3]).unwrap()), [None; 3]);
    assert_eq!(codes(b.pipeline(&vec![get.clone(); 2]).unwrap()), [None, Some(RateLimited)]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(codes(b.pipeline(&vec![get; 2]).unwrap()), [None, None]);
    // STATS frames count too.
    assert!(a.stats().is_err());
}

#[test]
fn login_throttling_per_source_address() {
    use velocity::client::Credentials;
    let s = Server::start_with(1, &["--login-fail-threshold", "3"]);
    let bad = Credentials::Password { user: "alice".into(), password: "wrong".into() };
    let mut c = s.raw();
    for _ in 0..3 {
        assert!(matches!(c.authenticate(&bad), Err(ClientError::Auth { status: 1, .. })));
    }
    // From the same address even the right password is now refused, unchecked.
    match s.connect(&s.alice) {
        Err(ClientError::Auth { status, message }) => {
            assert_eq!(status, 2, "{message}");
            assert!(message.contains("retry"), "{message}");
        }
        other => panic!("not throttled: {:?}", other.is_ok()),
    }
    // Another address is unaffected.
    let mut o = s.options();
    o.source = Some("127.0.0.2".parse().unwrap());
    let mut other = Client::connect(&o, &s.reader).unwrap();
    let st = other.execute("SHOW STATS").unwrap();
    let get = |n: &str| {
        st.rows.iter().find(|r| r[0] == Value::Bytes(n.as_bytes().to_vec())).unwrap()[1].as_int().unwrap()
    };
    assert!(get("failed_logins") >= 4);
    assert!(get("login_throttled") >= 1);
    // After the back-off (1 s for the first), the right password works and clears the count.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.client();
    s.client();
}

/// Logins and writes with known secrets; afterwards no file under the data directory and
/// nothing the server printed contains any of them, and the audit log has what it should.
#[test]
fn audit_log_records_logins_and_requests_and_no_secret_is_written_anywhere() {
    use velocity::client::{derive, Credentials};
    let mut s = Server::start_with(2, &["--login-fail-threshold", "0"]);
    let api_key = velocityd(&["apikey", "create", "--user", "alice"], &s.data_dir).trim().to_string();
    let wrong = "Wr0ng-Passw0rd-Secret-77";
    let secret_value = "Top-Secret-Value-9f8e7d";
    let mut c = s.client();
    c.execute(&format!("INSERT INTO kv (key, value) VALUES ('audited:1', '{secret_value}')")).unwrap();
    c.execute("SELECT value FROM kv WHERE key = 'audited:1'").unwrap();
    c.execute("SELECT key FROM kv WHERE key LIKE 'audited:%'").unwrap();
    let _ = c.execute("SELECT value FROM kv WHERE key = 'missing'");
    let bad = Credentials::Password { user: "alice".into(), password: wrong.into() };
    let _ = s.connect(&bad);
    eventually(|| s.connect(&Credentials::ApiKey(api_key.clone())).ok());
    let credential = match &s.alice {
        Credentials::Derived { credential, .. } => *credential,
        _ => unreachable!(),
    };
    let info = c.server_info().clone();
    let wrong_cred = derive(&info, "alice", wrong).unwrap();
    drop(c);
    assert!(s.terminate().success());

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let secrets: Vec<Vec<u8>> = vec![
        PASSWORD.as_bytes().to_vec(),
        RO_PASSWORD.as_bytes().to_vec(),
        wrong.as_bytes().to_vec(),
        api_key.as_bytes().to_vec(),
        secret_value.as_bytes().to_vec(),
        credential.to_vec(),
        hex(&credential).into_bytes(),
        wrong_cred.to_vec(),
        hex(&wrong_cred).into_bytes(),
    ];
    let mut files = vec![s.log.clone()];
    let mut stack = vec![s.data_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        // Stored values belong in the write-ahead log (encryption at rest hides them; see
        // e2e_durability); credentials belong nowhere.
        let in_wal = f.components().any(|c| c.as_os_str() == "wal");
        for sec in secrets.iter().filter(|s| !(in_wal && s.as_slice() == secret_value.as_bytes())) {
            assert!(!bytes.windows(sec.len()).any(|w| w == &sec[..]), "{} contains a secret", f.display());
        }
    }
    // The audit lines.
    let lines = audit_lines(&s.data_dir);
    assert!(lines.iter().any(|l| l["shard"] == 1), "both shards' files are read");
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| lines.iter().any(f);
    assert!(has(&|l| l["event"] == "login"
        && l["user"] == "alice"
        && l["code"] == "SUCCESS"
        && l["kind"] == "password"));
    assert!(has(&|l| l["event"] == "login" && l["code"] == "INVALID_CREDENTIALS" && l["user"] == "alice"));
    assert!(has(&|l| l["event"] == "login"
        && l["kind"] == "api_key"
        && l["user"] == "alice"
        && l["code"] == "SUCCESS"));
    assert!(has(&|l| l["kind"] == "insert"
        && l["target"].as_str().unwrap().contains("'audited:1'")
        && l["rows"] == 1));
    assert!(has(&|l| l["kind"] == "select_point" && l["code"] == "KEY_NOT_FOUND"));
    assert!(has(
        &|l| l["kind"] == "select_range" && l["target"].as_str().unwrap().contains("prefix 'audited:'")
    ));
    for l in &lines {
        for field in ["ts_ms", "conn", "peer", "user", "event", "kind", "rows", "code", "latency_us"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
    }
}

/// A data directory from a release that wrote JSON lines: the old file is kept beside the new
/// one (never appended to in another form), and `velocityd audit` prints both, the old first.
#[test]
fn audit_files_of_json_lines_are_kept_and_read_with_the_new_records() {
    let mut s = Server::start_with(1, &[]);
    assert!(s.terminate().success());
    let dir = s.keep_data();
    let legacy = r#"{"ts_ms":1,"shard":0,"conn":1,"peer":"","user":"u","event":"command","kind":"insert","target":"keys 'old'","rows":1,"code":"SUCCESS","latency_us":1}"#;
    std::fs::write(dir.join("audit/shard-0.log"), format!("{legacy}\n")).unwrap();
    let mut s = Server::start_in(dir, 1, &[]);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('new', 'v')").unwrap();
    assert!(s.terminate().success());
    let targets: Vec<String> = audit_lines(&s.data_dir)
        .iter()
        .filter(|l| l["kind"] == "insert")
        .map(|l| l["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(targets, ["keys 'old'", "keys 'new'"]);
    assert!(s.data_dir.join("audit/shard-0.log.1").exists());
}

#[test]
fn audit_off_writes_nothing() {
    let s = Server::start_with(1, &["--audit", "off"]);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('a', 'b')").unwrap();
    assert!(!s.data_dir.join("audit").exists());
}

#[test]
fn audit_files_rotate_by_size() {
    let mut s = Server::start_with(1, &["--audit-file-bytes-max", "4096"]);
    let mut c = s.client();
    let stmts: Vec<String> =
        (0..800).map(|i| format!("INSERT INTO kv (key, value) VALUES ('rot:{i}', 'v')")).collect();
    for r in c.pipeline(&stmts).unwrap() {
        r.unwrap();
    }
    drop(c);
    assert!(s.terminate().success());
    let dir = s.data_dir.join("audit");
    for name in ["shard-0.log", "shard-0.log.1", "shard-0.log.2", "shard-0.log.3", "shard-0.log.4"] {
        let len = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).len();
        assert!(len <= 4096, "{name} is {len} bytes");
    }
    assert!(!dir.join("shard-0.log.5").exists(), "at most 4 old files are kept");
    // What the kept files hold is read back whole: the newest statements, in order.
    let keys: Vec<String> = audit_lines(&s.data_dir)
        .iter()
        .filter(|l| l["kind"] == "insert")
        .map(|l| l["target"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys.len() > 40, "{}", keys.len());
    let first: usize = keys[0].trim_start_matches("keys 'rot:").trim_end_matches('\'').parse().unwrap();
    let want: Vec<String> = (first..800).map(|i| format!("keys 'rot:{i}'")).collect();
    assert_eq!(keys, want);
}
