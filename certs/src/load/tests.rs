use std::path::Path;

use crate::test_support::{TempDir, TestCa, expired, self_signed};
use crate::{CertError, CertPaths, load_certified_key, load_roots};

/// The message starts with the file and says what is wrong with it.
fn assert_names(err: &CertError, path: &Path, phrase: &str) {
    let msg = err.to_string();
    assert!(
        msg.starts_with(&path.display().to_string()),
        "message should start with {}: {msg}",
        path.display()
    );
    assert!(msg.contains(phrase), "message should say {phrase:?}: {msg}");
    assert!(!msg.contains('\n'), "message should be one line: {msg}");
}

const GARBAGE_CERT: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
const GARBAGE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";

#[test]
fn loads_a_valid_pair() {
    let dir = TempDir::new("load-ok");
    let pair = self_signed(&["a.test"]);
    let paths = dir.write_pair("a", &pair);
    let key = load_certified_key(&paths).unwrap();
    assert_eq!(key.cert.len(), 1);
    assert_eq!(key.cert[0], pair.der);
}

#[test]
fn loads_a_chain_and_a_combined_file() {
    let dir = TempDir::new("load-chain");
    let ca = TestCa::new("chain ca");
    let leaf = ca.issue(&["leaf.test"]);
    // Leaf then CA in one file, and the key in the same file too.
    let combined = dir.write("all.pem", &format!("{}{}{}", leaf.cert, ca.pair.cert, leaf.key));
    let key = load_certified_key(&CertPaths::new(&combined, &combined)).unwrap();
    assert_eq!(key.cert.len(), 2);
    assert_eq!(key.cert[0], leaf.der);
    assert_eq!(key.cert[1], ca.pair.der);
}

#[test]
fn missing_file_names_the_path() {
    let dir = TempDir::new("load-missing");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let missing = dir.join("nope.crt");
    let err = load_certified_key(&CertPaths::new(&missing, &pair.key)).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err:?}");
    assert_names(&err, &missing, "cannot read file");

    let missing_key = dir.join("nope.key");
    let err = load_certified_key(&CertPaths::new(&pair.cert, &missing_key)).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err:?}");
    assert_names(&err, &missing_key, "cannot read file");
}

#[test]
fn non_pem_file_is_not_pem() {
    let dir = TempDir::new("load-notpem");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let junk = dir.write("junk.crt", "this is not a certificate\n");
    let err = load_certified_key(&CertPaths::new(&junk, &pair.key)).unwrap_err();
    assert!(matches!(err, CertError::NotPem { .. }), "{err:?}");
    assert_names(&err, &junk, "not a PEM file");

    let err = load_certified_key(&CertPaths::new(&pair.cert, &junk)).unwrap_err();
    assert!(matches!(err, CertError::NotPem { .. }), "{err:?}");
    assert_names(&err, &junk, "not a PEM file");
}

#[test]
fn truncated_pem_is_malformed() {
    let dir = TempDir::new("load-malformed");
    let pair = self_signed(&["a.test"]);
    let half = &pair.cert[..pair.cert.len() / 2];
    let paths = CertPaths::new(dir.write("half.crt", half), dir.write("a.key", &pair.key));
    let err = load_certified_key(&paths).unwrap_err();
    assert!(matches!(err, CertError::MalformedPem { .. }), "{err:?}");
    assert_names(&err, &paths.cert, "malformed PEM");
}

#[test]
fn key_given_as_certificate_has_no_certificate() {
    let dir = TempDir::new("load-nocert");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let err = load_certified_key(&CertPaths::new(&pair.key, &pair.key)).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");
    assert_names(&err, &pair.key, "no PEM certificate found");
}

#[test]
fn certificate_given_as_key_has_no_private_key() {
    let dir = TempDir::new("load-nokey");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let err = load_certified_key(&CertPaths::new(&pair.cert, &pair.cert)).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err:?}");
    assert_names(&err, &pair.cert, "no PEM private key found");
}

#[test]
fn unparsable_certificate_is_invalid() {
    let dir = TempDir::new("load-badcert");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let bad = dir.write("bad.crt", GARBAGE_CERT);
    let err = load_certified_key(&CertPaths::new(&bad, &pair.key)).unwrap_err();
    assert!(matches!(err, CertError::InvalidCertificate { .. }), "{err:?}");
    assert_names(&err, &bad, "invalid certificate");
}

#[test]
fn unusable_key_is_unsupported() {
    let dir = TempDir::new("load-badkey");
    let pair = dir.write_pair("a", &self_signed(&["a.test"]));
    let bad = dir.write("bad.key", GARBAGE_KEY);
    let err = load_certified_key(&CertPaths::new(&pair.cert, &bad)).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err:?}");
    assert_names(&err, &bad, "unsupported or invalid private key");
}

#[test]
fn key_of_another_certificate_does_not_match() {
    let dir = TempDir::new("load-mismatch");
    let a = dir.write_pair("a", &self_signed(&["a.test"]));
    let b = dir.write_pair("b", &self_signed(&["b.test"]));
    let err = load_certified_key(&CertPaths::new(&a.cert, &b.key)).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    assert_names(&err, &b.key, "does not match");
    assert!(err.to_string().contains(&a.cert.display().to_string()));
}

#[test]
fn expired_certificate_is_refused() {
    let dir = TempDir::new("load-expired");
    let paths = dir.write_pair("old", &expired(&["old.test"]));
    let err = load_certified_key(&paths).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
    assert_names(&err, &paths.cert, "expired on");
}

#[test]
fn roots_load_every_certificate() {
    let dir = TempDir::new("roots-ok");
    let (a, b) = (TestCa::new("ca a"), TestCa::new("ca b"));
    let path = dir.write("cas.pem", &format!("{}{}", a.pair.cert, b.pair.cert));
    assert_eq!(load_roots(&path).unwrap().len(), 2);
}

#[test]
fn roots_without_certificate_fail() {
    let dir = TempDir::new("roots-bad");
    let ca = TestCa::new("ca");
    let key_only = dir.write("ca.key", &ca.pair.key);
    let err = load_roots(&key_only).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");
    assert_names(&err, &key_only, "no PEM certificate found");

    let garbage = dir.write("garbage.pem", GARBAGE_CERT);
    let err = load_roots(&garbage).unwrap_err();
    assert!(matches!(err, CertError::InvalidCertificate { .. }), "{err:?}");
    assert_names(&err, &garbage, "trust anchor");

    let missing = dir.join("missing.pem");
    let err = load_roots(&missing).unwrap_err();
    assert_names(&err, &missing, "cannot read file");
}

#[test]
fn public_types_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<CertError>();
    send_sync::<crate::SniResolver>();
    send::<crate::CertWatcher>();
}
