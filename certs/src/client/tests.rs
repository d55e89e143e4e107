use crate::test_support::{TempDir, self_signed};
use crate::{CertError, CertPaths, client_config, client_config_with_identity};

#[test]
fn defaults_to_mozilla_roots_and_keeps_alpn() {
    let config = client_config(None, vec![b"h2".to_vec()]).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    assert!(!config.client_auth_cert_resolver.has_certs());
    assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
}

#[test]
fn bad_ca_file_is_named() {
    let dir = TempDir::new("client-badca");
    let junk = dir.write("ca.pem", "not pem");
    let err = client_config(Some(&junk), Vec::new()).unwrap_err();
    assert!(matches!(err, CertError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&junk.display().to_string()));
}

#[test]
fn identity_is_checked_like_a_server_pair() {
    let dir = TempDir::new("client-identity");
    let a = dir.write_pair("a", &self_signed(&["a.test"]));
    let b = dir.write_pair("b", &self_signed(&["b.test"]));
    let config = client_config_with_identity(None, Vec::new(), &a).unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    let err = client_config_with_identity(None, Vec::new(), &CertPaths::new(&a.cert, &b.key)).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
}
