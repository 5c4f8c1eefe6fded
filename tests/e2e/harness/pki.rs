//! Certificates generated at test time: a CA, a server certificate for `localhost` and
//! 127.0.0.1, a client certificate, and a second, unrelated CA for the negative cases.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub other_ca_pem: String,
    pub other_client_cert_pem: String,
    pub other_client_key_pem: String,
}

/// Paths of the PEM files written by [`Pki::write`].
pub struct PkiFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert.pem())
}

fn leaf(issuer: &Issuer<'_, KeyPair>, names: &[&str], cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn generate() -> Self {
        let (ca_params, ca_key, ca_pem) = ca("Cordon Test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let (server_cert_pem, server_key_pem) =
            leaf(&issuer, &["localhost", "127.0.0.1"], "localhost");
        let (client_cert_pem, client_key_pem) = leaf(&issuer, &[], "cordon-gateway");
        let (other_params, other_key, other_ca_pem) = ca("Unrelated CA");
        let other = Issuer::new(other_params, other_key);
        let (other_client_cert_pem, other_client_key_pem) = leaf(&other, &[], "intruder");
        Self {
            ca_pem,
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
            other_ca_pem,
            other_client_cert_pem,
            other_client_key_pem,
        }
    }

    pub fn write(&self, dir: &Path) -> PkiFiles {
        let w = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        PkiFiles {
            ca: w("ca.pem", &self.ca_pem),
            server_cert: w("server.pem", &self.server_cert_pem),
            server_key: w("server.key", &self.server_key_pem),
            client_cert: w("client.pem", &self.client_cert_pem),
            client_key: w("client.key", &self.client_key_pem),
            other_ca: w("other-ca.pem", &self.other_ca_pem),
            other_client_cert: w("other-client.pem", &self.other_client_cert_pem),
            other_client_key: w("other-client.key", &self.other_client_key_pem),
        }
    }
}
