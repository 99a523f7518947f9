//! TLS for the `tls` and `wss` listeners: rustls (with the `ring`
//! provider, no C toolchain needed), a server certificate chain and key
//! from PEM files, and optionally client certificates checked against a CA.
//!
//! A verified client certificate authenticates a device: its subject CN is
//! the thing name (as AWS IoT's certificate policies use it). rumqttd's own
//! TLS support cannot serve shade: it reads the tenant from the certificate's
//! Organization, makes client certificates mandatory when it checks them,
//! and performs each handshake inside its accept loop, so one client that
//! never finishes a handshake stops every other client from connecting.
//!
//! Client certificates can be revoked with a CRL file (`[tls] crl`). The
//! files are read at start and again on SIGHUP ([`ServerTls::reload`]), so
//! an operator revokes a device, or renews the server's certificate,
//! without dropping every connected client; a file that does not load
//! keeps the previous settings in force.
//!
//! The client side (the CLI's and the agent's `mqtts://`) is in the
//! `shade-client` crate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

mod error;

mod crl;

pub(crate) use error::TlsError;

/// Paths of the PEM files, from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates authenticate clients; `None` accepts no
    /// client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse a handshake without a client certificate.
    pub require_client_cert: bool,
    /// Revoked client certificates (PEM CRLs of `client_ca`); `None`
    /// checks no revocation.
    pub crl: Option<PathBuf>,
}

/// The server side's TLS settings, shared by the `tls` and `wss`
/// listeners and replaced as a whole on reload: a handshake uses the
/// settings current when it starts.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files; fails when any cannot be read or used.
    pub fn load(files: &TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        Ok(Arc::new(ServerTls {
            current: RwLock::new(server_config(files)?),
            files: files.clone(),
        }))
    }

    /// The settings for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete configuration: writers
        // only swap in an `Arc` built beforehand.
        match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again. On error the previous settings stay in
    /// force (a half-written CRL must not let revoked devices back in, nor
    /// take TLS down).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.files)?;
        match self.current.write() {
            Ok(mut config) => *config = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

/// Builds the rustls server configuration once; every TLS connection
/// shares it.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("certificate chain", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Read {
        what: "private key",
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas = read_certs("CA certificate", ca)?;
            for cert in &cas {
                roots
                    .add(cert.clone())
                    .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", ca.display())))?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            if let Some(crl) = &files.crl {
                // Only the device's own certificate: intermediates of the
                // CA have no CRL of their own here, and an unknown status
                // is a refusal.
                verifier = verifier
                    .with_crls(crl::load(crl, &cas)?)
                    .only_check_end_entity_revocation();
            }
            let verifier = if files.require_client_cert {
                verifier
            } else {
                // Devices with a secret and users still connect without one.
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| match (e, &files.crl) {
                // webpki parses CRLs more strictly than x509-parser (a v1
                // CRL, say): still name the file.
                (VerifierBuilderError::InvalidCrl(e), Some(path)) => TlsError::Read {
                    what: "certificate revocation list",
                    path: path.clone(),
                    reason: format!("{e:?}"),
                },
                (e, _) => TlsError::Rustls(e.to_string()),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The subject CN of a (verified) client certificate, or `None` when it
/// has none or cannot be parsed.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
