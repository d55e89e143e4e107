use crate::test_support::{TempDir, leaf, self_signed};
use crate::{CertError, CertPaths, SniResolver};

#[test]
fn exact_beats_wildcard_beats_default() {
    let dir = TempDir::new("sni-pick");
    let default = self_signed(&["default.test"]);
    let wildcard = self_signed(&["*.example.com"]);
    let exact = self_signed(&["api.example.com", "other.test"]);
    // Listed after `exact`, so its claim on api.example.com loses.
    let late = self_signed(&["api.example.com", "late.test"]);
    let resolver = SniResolver::load(vec![
        dir.write_pair("default", &default),
        dir.write_pair("wildcard", &wildcard),
        dir.write_pair("exact", &exact),
        dir.write_pair("late", &late),
    ])
    .unwrap();
    let served = |name: Option<&str>| leaf(&resolver.resolve_name(name));

    assert_eq!(served(Some("api.example.com")), exact.der, "exact name");
    assert_eq!(served(Some("other.test")), exact.der, "second SAN");
    assert_eq!(served(Some("late.test")), late.der, "name only the late cert has");
    assert_eq!(served(Some("web.example.com")), wildcard.der, "wildcard");
    assert_eq!(served(Some("default.test")), default.der);
    assert_eq!(served(None), default.der, "no SNI");
    assert_eq!(served(Some("unknown.test")), default.der, "unknown name");
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let dir = TempDir::new("sni-wild");
    let default = self_signed(&["default.test"]);
    let wildcard = self_signed(&["*.example.com"]);
    let resolver = SniResolver::load(vec![
        dir.write_pair("default", &default),
        dir.write_pair("wildcard", &wildcard),
    ])
    .unwrap();
    let served = |name: &str| leaf(&resolver.resolve_name(Some(name)));
    assert_eq!(served("a.example.com"), wildcard.der);
    assert_eq!(served("example.com"), default.der, "bare parent");
    assert_eq!(served("a.b.example.com"), default.der, "two labels");
    assert_eq!(served("aexample.com"), default.der);
}

#[test]
fn matching_ignores_case_and_trailing_dot() {
    let dir = TempDir::new("sni-case");
    let default = self_signed(&["default.test"]);
    let exact = self_signed(&["Api.Example.COM"]);
    let wildcard = self_signed(&["*.Wild.Test"]);
    let resolver = SniResolver::load(vec![
        dir.write_pair("default", &default),
        dir.write_pair("exact", &exact),
        dir.write_pair("wildcard", &wildcard),
    ])
    .unwrap();
    let served = |name: &str| leaf(&resolver.resolve_name(Some(name)));
    assert_eq!(served("api.example.com"), exact.der);
    assert_eq!(served("API.EXAMPLE.COM."), exact.der);
    assert_eq!(served("X.wild.test"), wildcard.der);
    assert_eq!(resolver.names(), vec!["*.wild.test", "api.example.com", "default.test"]);
}

#[test]
fn load_needs_a_pair_and_names_the_bad_file() {
    assert!(matches!(SniResolver::load(Vec::new()), Err(CertError::NoCertificates)));
    let dir = TempDir::new("sni-bad");
    let good = dir.write_pair("good", &self_signed(&["good.test"]));
    let missing = CertPaths::new(dir.join("missing.crt"), dir.join("missing.key"));
    let err = SniResolver::load(vec![good, missing.clone()]).unwrap_err();
    assert!(
        err.to_string().starts_with(&missing.cert.display().to_string()),
        "{err}"
    );
}

#[test]
fn reload_swaps_and_a_broken_file_keeps_the_old_set() {
    let dir = TempDir::new("sni-reload");
    let first = self_signed(&["a.test"]);
    let paths = dir.write_pair("a", &first);
    let resolver = SniResolver::load(vec![paths.clone()]).unwrap();
    assert_eq!(resolver.paths(), std::slice::from_ref(&paths));
    assert_eq!(leaf(&resolver.resolve_name(Some("a.test"))), first.der);

    let second = self_signed(&["a.test", "b.test"]);
    dir.write_pair("a", &second);
    resolver.reload().unwrap();
    assert_eq!(leaf(&resolver.resolve_name(Some("a.test"))), second.der);
    assert_eq!(leaf(&resolver.resolve_name(Some("b.test"))), second.der);

    // New certificate, key not written yet: the pair does not match.
    let third = self_signed(&["a.test"]);
    std::fs::write(&paths.cert, &third.cert).unwrap();
    let err = resolver.reload().unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(leaf(&resolver.resolve_name(Some("a.test"))), second.der);
    assert_eq!(resolver.names(), vec!["a.test", "b.test"]);

    std::fs::write(&paths.key, &third.key).unwrap();
    resolver.reload().unwrap();
    assert_eq!(leaf(&resolver.resolve_name(Some("a.test"))), third.der);
}
