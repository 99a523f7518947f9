//! A test public-key infrastructure made inside the test (rcgen): a CA, a
//! server certificate for 127.0.0.1/localhost, client certificates whose CN
//! is a thing name, and the rustls client configurations that use them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A certificate authority that can sign server and client certificates.
#[allow(missing_debug_implementations)] // rcgen's Certificate has no Debug
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A signed certificate and its private key.
#[allow(missing_debug_implementations)] // rcgen's Certificate has no Debug
pub struct Issued {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert, key }
    }

    /// A server certificate valid for 127.0.0.1 and localhost.
    pub fn server(&self) -> Issued {
        self.issue(
            "shade test server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose subject CN is `cn`, with serial number
    /// `serial` (what a CRL names).
    pub fn client_with_serial(&self, cn: &str, serial: u64) -> Issued {
        self.issue_with(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, Some(serial))
    }

    /// A CRL of this CA, numbered `number`, revoking the certificates
    /// with these serial numbers; PEM.
    pub fn crl_pem(&self, number: u64, revoked: &[u64]) -> String {
        // Fixed dates: issued in the past, next one due far ahead.
        let past = rcgen::date_time_ymd(2020, 1, 1);
        let params = CertificateRevocationListParams {
            this_update: past,
            next_update: rcgen::date_time_ymd(4000, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: past,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("signed CRL")
            .pem()
            .expect("CRL as PEM")
    }

    fn issue(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        self.issue_with(cn, names, usage, None)
    }

    fn issue_with(
        &self,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        serial: Option<u64>,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.serial_number = serial.map(SerialNumber::from);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed certificate");
        Issued { cert, key }
    }

    /// Writes a server certificate (`server.crt.pem`, `server.key.pem`) and
    /// this CA (`ca.pem`) into `dir`, and returns the config's `[tls]`
    /// section using them, client certificates checked against this CA.
    /// Keys of the section may follow it.
    pub fn tls_section(&self, dir: &Path) -> String {
        let (cert, key) = self.server().write_pem(dir, "server");
        let ca = self.write_pem(dir, "ca");
        format!("[tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n")
    }

    /// Writes the CA certificate as PEM into `dir`; returns its path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).expect("write CA PEM");
        path
    }

    /// A rustls client configuration trusting this CA, presenting
    /// `identity` when given.
    pub fn client_config(&self, identity: Option<&Issued>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("CA into the root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(issued) => builder
                .with_client_auth_cert(vec![issued.der()], issued.private_key())
                .expect("client certificate"),
        };
        Arc::new(config)
    }
}

impl Issued {
    /// Writes `<name>.crt.pem` and `<name>.key.pem` into `dir`.
    pub fn write_pem(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt.pem"));
        let key = dir.join(format!("{name}.key.pem"));
        std::fs::write(&cert, self.cert.pem()).expect("write certificate");
        std::fs::write(&key, self.key.serialize_pem()).expect("write key");
        (cert, key)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}
