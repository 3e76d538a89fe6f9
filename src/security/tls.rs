//! TLS 1.3 configuration (rustls, ring). The server presents its identity certificate; the
//! client accepts any certificate *chain* but verifies the handshake signature with the
//! certificate's key and records that key's SPKI hash, which must then equal SERVER_INFO's
//! fingerprint and the known-hosts entry (trust on first use, as SSH): identity is the key,
//! not a CA's word.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the server fingerprint.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], String> {
    let der = CertificateDer::from(cert_der);
    let cert =
        webpki::EndEntityCert::try_from(&der).map_err(|e| format!("cannot parse the certificate: {e:?}"))?;
    Ok(Sha256::digest(cert.subject_public_key_info().as_ref()).into())
}

/// `SHA256:` followed by the unpadded base64 of the fingerprint, as OpenSSH prints keys.
pub fn fingerprint_string(fp: &[u8; 32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("SHA256:");
    for chunk in fp.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The first certificate of a PEM file's chain, and the chain.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| format!("cannot read the certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(certs)
}

pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = identity_of(cert_pem, key_pem)?;
    let cfg = rustls::ServerConfig::builder_with_provider(crypto())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Accepts the server's certificate if its handshake signature verifies with the certificate's
/// own key, and records that key's SPKI hash for the fingerprint checks that follow.
#[derive(Debug)]
pub struct KeyCapturingVerifier {
    provider: Arc<CryptoProvider>,
    pub seen: Mutex<Option<[u8; 32]>>,
}

impl ServerCertVerifier for KeyCapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = spki_sha256(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        *self.seen.lock().expect("verifier lock") = Some(fp);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration and the verifier that will hold the server key's fingerprint.
pub fn client_config() -> (Arc<rustls::ClientConfig>, Arc<KeyCapturingVerifier>) {
    let provider = crypto();
    let verifier = Arc::new(KeyCapturingVerifier { provider: provider.clone(), seen: Mutex::new(None) });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    (Arc::new(cfg), verifier)
}

/// The name sent in SNI; Velocity identifies servers by key, so any valid name will do.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("velocity").expect("static name"))
}

/// Node-to-node TLS (docs/cluster.md): both ends present their node's identity, and each
/// accepts only a key pinned in the cluster membership: a CA plays no part, as for clients.
#[derive(Debug)]
struct Pinned {
    provider: Arc<CryptoProvider>,
    allowed: Vec<[u8; 32]>,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let fp = spki_sha256(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self.allowed.contains(&fp) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn identity_of(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    use rustls::pki_types::pem::PemObject;
    let certs = certs_from_pem(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("cannot read the key PEM: {e}"))?;
    Ok((certs, key))
}

/// A node's listener for its peers: it presents the node's identity and takes a connection
/// only from a client presenting a key of `allowed` (the membership's fingerprints).
pub fn peer_server_config(
    cert_pem: &str,
    key_pem: &str,
    allowed: Vec<[u8; 32]>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = identity_of(cert_pem, key_pem)?;
    let provider = crypto();
    let verifier = Arc::new(Pinned { provider: provider.clone(), allowed });
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(cfg))
}

/// A node's link to a peer whose key must be `expected`, presenting this node's identity.
pub fn peer_client_config(
    cert_pem: &str,
    key_pem: &str,
    expected: [u8; 32],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let (certs, key) = identity_of(cert_pem, key_pem)?;
    let provider = crypto();
    let verifier = Arc::new(Pinned { provider: provider.clone(), allowed: vec![expected] });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(cfg))
}

/// The fingerprint of the key a peer presented in a finished handshake.
pub fn peer_fingerprint(conn: &rustls::Connection) -> Option<[u8; 32]> {
    let certs = match conn {
        rustls::Connection::Client(c) => c.peer_certificates(),
        rustls::Connection::Server(s) => s.peer_certificates(),
    }?;
    spki_sha256(certs.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (String, String, [u8; 32]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let fp = spki_sha256(cert.der()).unwrap();
        (cert.pem(), key.serialize_pem(), fp)
    }

    /// Run a handshake in memory; the first error either side hits.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<(rustls::Connection, rustls::Connection), rustls::Error> {
        let mut c: rustls::Connection =
            rustls::ClientConnection::new(client, server_name("velocity")).unwrap().into();
        let mut s: rustls::Connection = rustls::ServerConnection::new(server).unwrap().into();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            c.read_tls(&mut &back[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn peers_accept_only_pinned_keys_both_ways() {
        let (a_cert, a_key, a_fp) = identity();
        let (b_cert, b_key, b_fp) = identity();
        let (x_cert, x_key, _) = identity();
        let server = peer_server_config(&b_cert, &b_key, vec![a_fp, b_fp]).unwrap();
        let (c, s) = handshake(peer_client_config(&a_cert, &a_key, b_fp).unwrap(), server.clone()).unwrap();
        assert_eq!(peer_fingerprint(&s), Some(a_fp));
        assert_eq!(peer_fingerprint(&c), Some(b_fp));
        // A stranger's key, a client with no key at all, and a server that is not the expected node.
        assert!(handshake(peer_client_config(&x_cert, &x_key, b_fp).unwrap(), server.clone()).is_err());
        assert!(handshake(client_config().0, server).is_err());
        let impostor = peer_server_config(&x_cert, &x_key, vec![a_fp]).unwrap();
        assert!(handshake(peer_client_config(&a_cert, &a_key, b_fp).unwrap(), impostor).is_err());
    }
}
