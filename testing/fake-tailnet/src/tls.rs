//! The test certificate authorities and per-peer server certificates.
//!
//! The tailnet CA (`testdata/tls/tailnet-ca.pem`) signs a fresh certificate for each peer's
//! fqdn at startup. The "wrong" CA signed nothing and exists for negative tests. Both are
//! committed test fixtures; the key files are test-only secrets with no value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::FakeTailnetError;

/// PEM of the tailnet test CA certificate (trust anchor for every peer's HTTPS certificate).
pub const TAILNET_CA_PEM: &str = include_str!("../../../testdata/tls/tailnet-ca.pem");

/// PEM of an unrelated CA certificate that signed nothing (for negative TLS tests).
pub const WRONG_CA_PEM: &str = include_str!("../../../testdata/tls/wrong-ca.pem");

/// Common name of the tailnet test CA.
pub const TAILNET_CA_COMMON_NAME: &str = "fake tailnet test CA";

/// Common name of the unrelated "wrong" CA.
pub const WRONG_CA_COMMON_NAME: &str = "fake tailnet wrong CA";

/// File name of the tailnet CA certificate, in the test data directory or as written by
/// [`write_ca_pem`].
pub const TAILNET_CA_FILE: &str = "tailnet-ca.pem";

const TAILNET_CA_KEY_PEM: &str = include_str!("../../../testdata/tls/tailnet-ca-key.pem");

/// The workspace's `testdata/tls` directory (only meaningful inside the source tree).
pub fn tls_testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tls")
}

/// Path of the committed tailnet CA certificate (`testdata/tls/tailnet-ca.pem`).
pub fn ca_cert_pem_path() -> PathBuf {
    tls_testdata_dir().join(TAILNET_CA_FILE)
}

/// Path of the committed unrelated CA certificate (`testdata/tls/wrong-ca.pem`).
pub fn wrong_ca_pem_path() -> PathBuf {
    tls_testdata_dir().join("wrong-ca.pem")
}

/// Writes the embedded tailnet CA certificate as `dir/tailnet-ca.pem` and returns that path.
///
/// Use this when running outside the source tree, where [`ca_cert_pem_path`] does not exist.
pub fn write_ca_pem(dir: &Path) -> Result<PathBuf, FakeTailnetError> {
    let path = dir.join(TAILNET_CA_FILE);
    std::fs::write(&path, TAILNET_CA_PEM)
        .map_err(|e| FakeTailnetError::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// Generates a new self-signed CA valid from 2024 to 2124 and returns `(cert_pem, key_pem)`.
///
/// Only used to (re)create the committed fixtures; see the ignored test `regenerate_test_cas`.
pub fn generate_ca_pem(common_name: &str) -> Result<(String, String), FakeTailnetError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(common_name).self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA parameters; must stay identical to the ones the committed CA was generated with,
/// because the issuer name and key identifier method are rebuilt from them when signing.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

/// Builds a rustls server config (ring provider, HTTP/1.1 ALPN) with a fresh certificate for
/// `fqdn` (and `extra_names`) signed by the tailnet CA: what a peer, or a test's own server
/// on the tailnet, presents.
pub fn server_config(
    fqdn: &str,
    extra_names: &[String],
) -> Result<Arc<ServerConfig>, FakeTailnetError> {
    let issuer = Issuer::new(
        ca_params(TAILNET_CA_COMMON_NAME),
        KeyPair::from_pem(TAILNET_CA_KEY_PEM)?,
    );
    let names = std::iter::once(fqdn.to_string()).chain(extra_names.iter().cloned());
    let mut params = CertificateParams::new(names.collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, fqdn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A path to the tailnet CA certificate: the committed file if this runs inside the source
/// tree, otherwise the embedded copy written to the system temp directory.
pub fn ca_pem_file() -> Result<PathBuf, FakeTailnetError> {
    let in_tree = ca_cert_pem_path();
    if in_tree.is_file() {
        return Ok(in_tree.canonicalize().unwrap_or(in_tree));
    }
    let dir = std::env::temp_dir().join(format!("fake-tailnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| FakeTailnetError::io(format!("create {}", dir.display()), e))?;
    write_ca_pem(&dir)
}
