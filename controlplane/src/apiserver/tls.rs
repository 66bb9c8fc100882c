//! The data dir's credentials: a CA, a serving certificate signed by it (regenerated at each
//! start so the SANs follow the configuration), the admin bearer token, and the kubeconfig.
//! The CA is made on first start, or is the operator's own: a `pki/ca.crt` + `pki/ca.key`
//! (PKCS#8) placed there before, as kubeadm's external CA, signs under its own subject.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::ApiServerError;

/// The credentials the server runs with. Its `Debug` shows no secret.
pub struct Pki {
    /// PEM of the CA certificate (what clients trust).
    pub ca_pem: String,
    /// The serving certificate chain (leaf, CA).
    pub chain: Vec<CertificateDer<'static>>,
    /// The serving key (PKCS#8 DER).
    pub key_der: Vec<u8>,
    /// The admin bearer token.
    pub token: String,
    /// The serving chain as PEM (leaf, CA), for servers configured from PEM (tonic).
    pub chain_pem: String,
    /// The serving key as PEM.
    pub key_pem: String,
    /// The cluster CA as an issuer: signs node client certificates (`join.rs`).
    pub ca_issuer: Arc<Issuer<'static, KeyPair>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApiServerError {
    let path = path.to_owned();
    move |source| ApiServerError::Io { op, path, source }
}

fn cert(what: &'static str) -> impl FnOnce(rcgen::Error) -> ApiServerError {
    move |source| ApiServerError::Cert { what, source }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), ApiServerError> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(contents).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

/// The CA's parameters; rebuilt identically at each start so it can sign again.
fn ca_params() -> Result<CertificateParams, ApiServerError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert("parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(params)
}

/// Loads the CA from `pki/` (its subject and key identifier taken from the certificate, so
/// a CA made elsewhere signs correctly) or creates it.
fn load_or_create_ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), ApiServerError> {
    let (crt_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt_path.exists() && key_path.exists() {
        let crt = fs::read_to_string(&crt_path).map_err(io("read", &crt_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&crt, key).map_err(cert("CA certificate"))?;
        return Ok((crt, issuer));
    }
    let key = KeyPair::generate().map_err(cert("CA key generation"))?;
    let params = ca_params()?;
    let crt = params.self_signed(&key).map_err(cert("CA signing"))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&crt_path, crt.pem().as_bytes())?;
    Ok((crt.pem(), Issuer::new(params, key)))
}

fn load_or_create_token(path: &Path) -> Result<String, ApiServerError> {
    if path.exists() {
        let token = fs::read_to_string(path).map_err(io("read", path))?;
        let token = token.trim().to_owned();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, token.as_bytes())?;
    Ok(token)
}

fn ca_der(ca_pem: &str, path: &Path) -> Result<CertificateDer<'static>, ApiServerError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| ApiServerError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Loads (or creates on first start) the CA and token under `data_dir/pki`, and signs a
/// fresh serving certificate for 127.0.0.1, localhost and `extra_sans`.
pub fn load_or_create(data_dir: &Path, extra_sans: &[String]) -> Result<Pki, ApiServerError> {
    let dir = data_dir.join("pki");
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let (ca_pem, issuer) = load_or_create_ca(&dir)?;
    let token = load_or_create_token(&dir.join("admin.token"))?;
    let mut sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans).map_err(cert("serving parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(cert("serving key generation"))?;
    let leaf = params
        .signed_by(&key, &issuer)
        .map_err(cert("serving signing"))?;
    let chain = vec![leaf.der().clone(), ca_der(&ca_pem, &dir.join("ca.crt"))?];
    Ok(Pki {
        chain_pem: format!("{}{}", leaf.pem(), ca_pem),
        key_pem: key.serialize_pem(),
        ca_pem,
        chain,
        key_der: key.serialize_der(),
        token,
        ca_issuer: Arc::new(issuer),
    })
}

/// The rustls configuration (ring provider, HTTP/1.1 via ALPN).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, ApiServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ApiServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), key)
        .map_err(ApiServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The kubeconfig text for `server` (`https://host:port`).
pub fn kubeconfig(server: &str, pki: &Pki) -> String {
    let ca = STANDARD.encode(pki.ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: skiff-admin\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff-admin\n    namespace: default\ncurrent-context: skiff\n",
        token = pki.token
    )
}

/// Writes `data_dir/kubeconfig` (mode 0600) and returns its path.
pub fn write_kubeconfig(
    data_dir: &Path,
    server: &str,
    pki: &Pki,
) -> Result<PathBuf, ApiServerError> {
    let path = data_dir.join("kubeconfig");
    write_private(&path, kubeconfig(server, pki).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &["api.example".into()]).unwrap();
        let second = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.token, second.token);
        assert_eq!(first.token.len(), 48);
        assert_eq!(second.chain[1], first.chain[1]);
        assert!(server_config(&second).is_ok());
        let shown = format!("{second:?}");
        assert!(!shown.contains(&second.token) && !shown.contains("PRIVATE"));
        let kc = kubeconfig("https://127.0.0.1:6443", &first);
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        assert!(kc.contains(&format!("token: {}", first.token)));
        let mode = fs::metadata(dir.path().join("pki/ca.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn an_operators_own_ca_signs_under_its_own_subject() {
        // Made with `openssl genpkey -algorithm EC` and `openssl req -x509 -subj
        // "/O=Example Org/CN=example-cluster-ca"`, as a provisioner would.
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir_all(&pki).unwrap();
        let ca_pem = include_str!("testdata/external-ca.crt");
        fs::write(pki.join("ca.crt"), ca_pem).unwrap();
        fs::write(pki.join("ca.key"), include_str!("testdata/external-ca.key")).unwrap();
        let loaded = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(loaded.ca_pem, ca_pem, "the operator's CA is kept");

        // The serving certificate and a node certificate both verify against that CA.
        use rustls::pki_types::pem::PemObject;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let now = rustls::pki_types::UnixTime::now();
        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        use rustls::client::danger::ServerCertVerifier;
        servers
            .verify_server_cert(&loaded.chain[0], &[], &name, &[], now)
            .expect("the serving certificate chains to the operator's CA");
        let node_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&node_key)
            .unwrap()
            .pem()
            .unwrap();
        let node_pem = super::super::join::sign_node_csr(
            &loaded.ca_issuer,
            "worker-1",
            &csr,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let node_der = CertificateDer::from_pem_slice(node_pem.as_bytes()).unwrap();
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        clients
            .verify_client_cert(&node_der, &[], now)
            .expect("a node certificate chains to the operator's CA");
    }
}
