//! TLS of an `mqtts://` broker: the rustls client configuration built once
//! at start from PEM files, with the `ring` provider (no C toolchain).
//!
//! The roots trusted are the `ca` file's certificates, or the system's when
//! no `ca` is set; `cert` and `key` are the device's client certificate,
//! whose CN the broker takes as the thing name. The server name checked is
//! the broker URL's host (rumqttc passes it to rustls), so an IP address
//! works when the server's certificate lists it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Why the TLS files could not be used; each names its file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {what} (PEM)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("no system root certificates found; name the broker's CA with ca (--ca FILE)")]
    NoSystemRoots,
    #[error("invalid TLS setup: {0}")]
    Rustls(String),
}

/// The PEM files of an `mqtts://` connection, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// The client certificate and its private key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Reads the files and builds the configuration every connection shares.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in read_certs("CA certificate", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", ca.display())))?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped; an empty
            // store would refuse every broker, so it is an error.
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs("client certificate", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                what: "private key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                TlsError::Rustls(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = client_config(&TlsFiles {
            ca: Some(missing.clone()),
            identity: None,
        })
        .expect_err("missing CA");
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(&TlsFiles {
            ca: Some(empty.clone()),
            identity: None,
        })
        .expect_err("no certificate");
        assert!(e.to_string().contains(&*empty.to_string_lossy()), "{e}");
    }
}
