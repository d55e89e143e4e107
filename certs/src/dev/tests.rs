use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{DevCerts, ensure_dev_certs};
use crate::test_support::TempDir;
use crate::{CertError, CertPaths, load_certified_key, load_roots, provider};

fn verify(ca: &std::path::Path, cert: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(ca).unwrap()), provider())
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            cert,
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn creates_then_reuses() {
    let dir = TempDir::new("dev-create");
    let paths = CertPaths::new(dir.join("certs/dev/server.crt"), dir.join("certs/dev/server.key"));

    let outcome = ensure_dev_certs(&paths.cert, &paths.key).unwrap();
    let ca_path = dir.join("certs/dev/ca.crt");
    assert_eq!(
        outcome,
        DevCerts::Generated {
            ca_path: ca_path.clone()
        }
    );
    assert!(dir.join("certs/dev/ca.key").exists());

    let loaded = load_certified_key(&paths).unwrap();
    let leaf = loaded.end_entity_cert().unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        verify(&ca_path, leaf, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify(&ca_path, leaf, "example.com").is_err());

    let before: Vec<Vec<u8>> = ["server.crt", "server.key", "ca.crt", "ca.key"]
        .iter()
        .map(|f| std::fs::read(dir.join(&format!("certs/dev/{f}"))).unwrap())
        .collect();
    assert_eq!(ensure_dev_certs(&paths.cert, &paths.key).unwrap(), DevCerts::Existing);
    let after: Vec<Vec<u8>> = ["server.crt", "server.key", "ca.crt", "ca.key"]
        .iter()
        .map(|f| std::fs::read(dir.join(&format!("certs/dev/{f}"))).unwrap())
        .collect();
    assert_eq!(before, after, "second call must not touch any file");
}

#[cfg(unix)]
#[test]
fn key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("dev-mode");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    ensure_dev_certs(&cert, &key).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
}

#[test]
fn reuses_an_existing_ca() {
    let dir = TempDir::new("dev-reuse");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    ensure_dev_certs(&cert, &key).unwrap();
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();
    let first_leaf = std::fs::read(&cert).unwrap();

    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    let outcome = ensure_dev_certs(&cert, &key).unwrap();
    assert!(matches!(outcome, DevCerts::Generated { .. }));
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before, "CA kept");
    assert_ne!(std::fs::read(&cert).unwrap(), first_leaf, "new server certificate");

    let loaded = load_certified_key(&CertPaths::new(&cert, &key)).unwrap();
    verify(&dir.join("ca.crt"), loaded.end_entity_cert().unwrap(), "localhost").unwrap();
}

#[test]
fn half_a_pair_is_not_overwritten() {
    let dir = TempDir::new("dev-half");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, "precious").unwrap();
    let err = ensure_dev_certs(&cert, &key).unwrap_err();
    assert!(matches!(err, CertError::IncompletePair { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&key.display().to_string()), "{err}");
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), "precious");

    // Same for the CA: a lone ca.key is someone's, not ours to replace.
    std::fs::remove_file(&cert).unwrap();
    std::fs::write(dir.join("ca.key"), "precious").unwrap();
    let err = ensure_dev_certs(&cert, &key).unwrap_err();
    assert!(matches!(err, CertError::IncompletePair { .. }), "{err:?}");
    assert!(!cert.exists() && !key.exists());
}

#[test]
fn a_non_ca_certificate_is_not_used_as_ca() {
    let dir = TempDir::new("dev-notca");
    let leaf = crate::test_support::self_signed(&["x.test"]);
    dir.write_pair("ca", &leaf);
    let err = ensure_dev_certs(&dir.join("server.crt"), &dir.join("server.key")).unwrap_err();
    assert!(matches!(err, CertError::InvalidCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("not a CA"), "{err}");
}
