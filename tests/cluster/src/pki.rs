//! The cluster's PKI, generated with rcgen (pure Rust, no openssl CLI): one CA, the apiserver's
//! serving cert (loopback, the bridge address, the `kubernetes` service names and IP), client
//! certs for the controller-manager, the scheduler and the apiserver→kubelet client (the
//! kubelets serve with self-signed certs of their own), and the service-account
//! signing key pair. ECDSA P-256 throughout (Go's crypto/x509 and klog's keyutil read it:
//! PKCS#8 private keys, PKIX public keys).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

use crate::{ClusterConfig, ClusterError, Layout, Result, io_err};

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> ClusterError + '_ {
    move |source| ClusterError::Cert {
        what: what.to_string(),
        source,
    }
}

/// A client identity: the apiserver maps CN to the user and O to groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// File stem under `pki/`.
    pub file: &'static str,
    pub user: &'static str,
    pub groups: &'static [&'static str],
}

/// The client certs phase 1 makes.
pub const CLIENTS: &[ClientIdentity] = &[
    ClientIdentity {
        file: "kube-controller-manager",
        user: "system:kube-controller-manager",
        groups: &[],
    },
    ClientIdentity {
        file: "kube-scheduler",
        user: "system:kube-scheduler",
        groups: &[],
    },
    ClientIdentity {
        file: "apiserver-kubelet-client",
        user: "kube-apiserver-kubelet-client",
        groups: &["system:masters"],
    },
    // The apiserver's front-proxy (requestheader) client: the extension-apiserver-authentication
    // configmap then holds a requestheader CA, which the delegated authentication of the
    // controller-manager and scheduler (and aggregated APIs) expect.
    ClientIdentity {
        file: "front-proxy-client",
        user: "front-proxy-client",
        groups: &[],
    },
];

/// File stem of the apiserver's serving cert.
pub const APISERVER: &str = "apiserver";
/// DNS and IP names of the apiserver's serving cert.
pub fn apiserver_sans(cfg: &ClusterConfig) -> Result<Vec<String>> {
    let d = &cfg.cluster_domain;
    let mut sans = vec![];
    if !cfg.api_host.is_loopback() {
        sans.push(cfg.api_host.to_string());
    }
    sans.extend([
        "127.0.0.1".into(),
        "localhost".into(),
        cfg.kubernetes_service_ip()?.to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{d}"),
    ]);
    Ok(sans)
}

fn base_params(sans: Vec<String>, cn: &str, what: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).map_err(cert_err(what))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = date_time_ymd(2000, 1, 1);
    p.not_after = date_time_ymd(2100, 1, 1);
    Ok(p)
}

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
    if private {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

/// Generates every cert and key of the cluster into `<dir>/pki/`, unless a complete set is
/// already there (a restarted cluster keeps its CA, so kubeconfigs handed out stay valid).
pub fn ensure(cfg: &ClusterConfig) -> Result<()> {
    let l = cfg.layout();
    let sans = apiserver_sans(cfg)?.join(",");
    if is_complete(&l) && fs::read_to_string(sans_file(&l)).ok().as_deref() == Some(sans.as_str()) {
        return Ok(());
    }
    generate(cfg)?;
    write(&sans_file(&l), &sans, false)
}

/// The apiserver cert's names, to notice when they change (a new pod network address).
fn sans_file(l: &Layout) -> std::path::PathBuf {
    l.pki().join("apiserver.sans")
}

fn is_complete(l: &Layout) -> bool {
    let mut files = vec![l.ca_cert(), l.ca_key(), l.sa_key(), l.sa_pub()];
    for stem in std::iter::once(APISERVER).chain(CLIENTS.iter().map(|c| c.file)) {
        let (c, k) = l.cert_pair(stem);
        files.push(c);
        files.push(k);
    }
    files.iter().all(|f| f.is_file())
}

/// Generates a fresh PKI, overwriting what is there.
pub fn generate(cfg: &ClusterConfig) -> Result<()> {
    let l = cfg.layout();
    fs::create_dir_all(l.pki()).map_err(io_err(format!("creating {}", l.pki().display())))?;

    // CA
    let ca_key = KeyPair::generate().map_err(cert_err("CA key"))?;
    let mut ca_params = base_params(
        vec![],
        &format!("elasticjob-local-cluster-ca-{}", cfg.name),
        "CA",
    )?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(cert_err("CA cert"))?;
    write(&l.ca_cert(), &ca_cert.pem(), false)?;
    write(&l.ca_key(), &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    // apiserver serving cert
    let key = KeyPair::generate().map_err(cert_err("apiserver key"))?;
    let mut p = base_params(apiserver_sans(cfg)?, "kube-apiserver", "apiserver cert")?;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(cert_err("apiserver cert"))?;
    let (c, k) = l.cert_pair(APISERVER);
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;

    // client certs
    for id in CLIENTS {
        let key = KeyPair::generate().map_err(cert_err(id.file))?;
        let mut p = base_params(vec![], id.user, id.file)?;
        for g in id.groups {
            p.distinguished_name.push(DnType::OrganizationName, *g);
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).map_err(cert_err(id.file))?;
        let (c, k) = l.cert_pair(id.file);
        write(&c, &cert.pem(), false)?;
        write(&k, &key.serialize_pem(), true)?;
    }

    // service-account token signing keys
    let sa = KeyPair::generate().map_err(cert_err("service-account key"))?;
    write(&l.sa_key(), &sa.serialize_pem(), true)?;
    write(&l.sa_pub(), &sa.public_key_pem(), false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    #[test]
    fn generated_apiserver_cert_verifies_against_the_ca_for_loopback_and_service_names() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ClusterConfig::new(dir.path().join("c1"), "/nonexistent").unwrap();
        ensure(&cfg).unwrap();
        let l = cfg.layout();
        assert!(is_complete(&l));
        let mode = fs::metadata(l.ca_key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            fs::read_to_string(l.sa_pub())
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(
            fs::read_to_string(l.sa_key())
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(l.ca_cert()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from_pem_file(l.cert_pair("apiserver").0).unwrap();
        for name in [
            "127.0.0.1",
            "10.96.0.1",
            "localhost",
            "kubernetes.default.svc.cluster.local",
        ] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("example.com").unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );
        // A client cert is no serving cert.
        let client = CertificateDer::from_pem_file(l.cert_pair("kube-scheduler").0).unwrap();
        assert!(
            verifier
                .verify_server_cert(
                    &client,
                    &[],
                    &ServerName::try_from("127.0.0.1").unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );

        // ensure() keeps an existing PKI.
        let before = fs::read(l.ca_cert()).unwrap();
        ensure(&cfg).unwrap();
        assert_eq!(fs::read(l.ca_cert()).unwrap(), before);
    }
}
