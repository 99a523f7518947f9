//! TLS of an `mqtts://` broker: the rustls client configuration, built
//! once from PEM files with the `ring` provider (no C toolchain) and
//! shared by every connection.
//!
//! The roots trusted are the CA file's certificates, or the system's when
//! no CA is given; the client certificate and key, when given, are
//! presented to the broker, which takes the certificate's CN as the thing
//! name. The server name checked is the broker URL's host (rumqttc passes
//! it to rustls), so an IP address works when the server's certificate
//! lists it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::ClientError;

/// The PEM files of an `mqtts://` connection (`--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate to present; `None`: none.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate (chain, leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads `files` and builds the configuration every connection shares.
/// Each error names the file it could not use.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in read_certs("CA certificate", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Rustls(format!("CA {}: {e}", ca.display())))?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped; an empty
            // store would refuse every broker, so it is an error.
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ClientError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.identity {
        None => builder.with_no_client_auth(),
        Some(ClientIdentity { cert, key }) => {
            let certs = read_certs("client certificate", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| ClientError::Read {
                what: "private key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                ClientError::Rustls(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let read_error = |reason: String| ClientError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(ClientError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(path: &Path) -> TlsFiles {
        TlsFiles {
            ca: Some(path.to_owned()),
            identity: None,
        }
    }

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = client_config(&ca(&missing)).expect_err("missing CA");
        assert!(matches!(e, ClientError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(&ca(&empty)).expect_err("no certificate");
        assert!(matches!(e, ClientError::Empty { .. }), "{e:?}");
        assert!(e.to_string().contains(&*empty.to_string_lossy()), "{e}");
    }

    #[test]
    fn a_client_certificate_file_that_holds_none_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("dev.crt.pem");
        std::fs::write(&cert, "hello\n").expect("write");
        let files = TlsFiles {
            ca: None,
            identity: Some(ClientIdentity {
                cert: cert.clone(),
                key: dir.path().join("dev.key.pem"),
            }),
        };
        match client_config(&files) {
            // No system roots on this machine: refused before the files.
            Err(ClientError::NoSystemRoots) => {}
            Err(e) => assert!(e.to_string().contains(&*cert.to_string_lossy()), "{e}"),
            Ok(_) => panic!("a client certificate without a certificate was accepted"),
        }
    }
}
