//! The CRL file of `[tls] crl`, checked before rustls gets it.
//!
//! webpki consults the first CRL whose issuer matches a certificate's, so a
//! file holding an older and a newer CRL of the same CA (appended rather
//! than replaced) would let in what only the newer one revokes. Here each
//! CRL is parsed with the file named in any error, a CRL not issued by the
//! client CA is refused (it would make every device certificate's status
//! unknown, which refuses them all), and of several CRLs of one issuer
//! only the newest is kept (highest CRL number, then latest thisUpdate).

use std::path::Path;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::num_bigint::BigUint;

use super::error::TlsError;

const WHAT: &str = "certificate revocation list";

/// The newest CRL of one issuer so far: the issuer's raw name, the CRL's
/// rank (CRL number, then thisUpdate), the CRL.
type Newest = (
    Vec<u8>,
    (Option<BigUint>, i64),
    CertificateRevocationListDer<'static>,
);

fn error(path: &Path, reason: String) -> TlsError {
    TlsError::Read {
        what: WHAT,
        path: path.to_owned(),
        reason,
    }
}

/// The CRLs of `path` that apply, for client certificates issued by one of
/// `cas`.
pub(super) fn load(
    path: &Path,
    cas: &[CertificateDer<'_>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| error(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e.to_string()))?;
    if crls.is_empty() {
        return Err(TlsError::Empty {
            what: WHAT,
            path: path.to_owned(),
        });
    }
    let ca_subjects: Vec<Vec<u8>> = cas
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, ca)| ca.subject().as_raw().to_vec())
        .collect();
    let mut newest: Vec<Newest> = Vec::new();
    for (i, der) in crls.into_iter().enumerate() {
        let (issuer, rank) = {
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| error(path, format!("CRL {} of the file: {e}", i + 1)))?;
            let issuer = crl.issuer().as_raw().to_vec();
            if !ca_subjects.contains(&issuer) {
                return Err(error(
                    path,
                    format!(
                        "CRL {} of the file is issued by {}, not by the client CA: every device certificate would be refused",
                        i + 1,
                        crl.issuer()
                    ),
                ));
            }
            let rank = (crl.crl_number().cloned(), crl.last_update().timestamp());
            (issuer, rank)
        };
        match newest.iter_mut().find(|(known, _, _)| *known == issuer) {
            Some(entry) if entry.1 < rank => *entry = (issuer, rank, der),
            Some(_) => {}
            None => newest.push((issuer, rank, der)),
        }
    }
    Ok(newest.into_iter().map(|(_, _, der)| der).collect())
}
