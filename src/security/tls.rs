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
    use rustls::pki_types::pem::PemObject;
    let certs = certs_from_pem(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("cannot read the key PEM: {e}"))?;
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
