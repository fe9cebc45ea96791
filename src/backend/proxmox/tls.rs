//! How haimg trusts the Proxmox certificate.
//!
//! Four modes, from `proxmox.tls` ([`TlsMode`]):
//! * `System`: the platform trust store (rustls-platform-verifier), hostnames checked.
//! * `CaFile`: only the given CA bundle (typically `/etc/pve/pve-root-ca.pem`),
//!   hostnames checked: the node certificate carries the node name and IP in its SAN.
//! * `Fingerprint`: the leaf certificate's SHA-256 must equal the pin; nothing
//!   else is checked about the chain or the name (the pin names one exact
//!   certificate, as `pvenode cert info` shows it). Handshake signatures are
//!   still verified, so the server must hold the pinned certificate's key.
//! * `Insecure`: any certificate; the caller warns on every run.
//!
//! Invariant: every mode uses the ring crypto provider, installed as the process
//! default before a client is built.

use std::sync::Arc;

use haimg_model::TlsMode;
use reqwest::blocking::ClientBuilder;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("failed to read the CA file {path}: {error}")]
    ReadCa { path: String, error: std::io::Error },
    #[error("the CA file {path} holds no PEM certificate")]
    EmptyCa { path: String },
    #[error("failed to set up TLS: {0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install ring as the process-wide provider (a no-op when one is installed).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `AB:CD:...`, the way Proxmox shows fingerprints.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Vec<u8> {
    Sha256::digest(der).to_vec()
}

/// Apply the trust mode to a client builder.
pub fn configure(builder: ClientBuilder, mode: &TlsMode) -> Result<ClientBuilder, TlsSetupError> {
    install_provider();
    match mode {
        TlsMode::System => Ok(builder),
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|error| TlsSetupError::ReadCa {
                path: path.clone(),
                error,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| TlsSetupError::Rustls(format!("{path}: {e}")))?;
            if certs.is_empty() {
                return Err(TlsSetupError::EmptyCa { path: path.clone() });
            }
            Ok(builder.tls_certs_only(certs))
        }
        TlsMode::Fingerprint(pin) => {
            Ok(builder.tls_backend_preconfigured(custom_config(Verifier::Pin(pin.clone()))?))
        }
        TlsMode::Insecure => Ok(builder.tls_backend_preconfigured(custom_config(Verifier::Any)?)),
    }
}

fn custom_config(v: Verifier) -> Result<rustls::ClientConfig, TlsSetupError> {
    let p = provider();
    let verifier = Arc::new(PinningVerifier {
        mode: v,
        provider: p.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(cfg)
}

#[derive(Debug)]
enum Verifier {
    Pin(Vec<u8>),
    Any,
}

#[derive(Debug)]
struct PinningVerifier {
    mode: Verifier,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.mode {
            Verifier::Any => Ok(ServerCertVerified::assertion()),
            Verifier::Pin(pin) => {
                let got = fingerprint(end_entity.as_ref());
                if &got == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "certificate fingerprint {} does not match the pinned {} (was the node certificate renewed?)",
                        format_fingerprint(&got),
                        format_fingerprint(pin)
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_like_proxmox() {
        assert_eq!(format_fingerprint(&[0xab, 0x01, 0xff]), "AB:01:FF");
        assert_eq!(fingerprint(b"").len(), 32);
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let e = configure(
            reqwest::blocking::Client::builder(),
            &TlsMode::CaFile("/nonexistent/pve-root-ca.pem".into()),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .starts_with("failed to read the CA file /nonexistent/pve-root-ca.pem"),
            "{e}"
        );
    }
}
