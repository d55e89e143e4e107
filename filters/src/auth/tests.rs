//! Auth tests.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use tower::{Layer, ServiceExt, service_fn};

use super::keys::{KeyTable, NamedKey};
use super::*;
use crate::{AgentIdentity, AuthRejection, BoxError, CountingMetrics, PeerIdentity};

const CI_KEY: &str = "sk-ci-0123456789abcdef";
const DEV_KEY: &str = "sk-dev-fedcba9876543210";

fn params() -> AuthParams {
    AuthParams::new(
        [("ci", hash_api_key(CI_KEY)), ("dev", hash_api_key(DEV_KEY))],
        ["spiffe://agents/runner"],
    )
    .unwrap()
}

/// What reached the inner service: the identity and the headers.
type Seen = Arc<Mutex<Vec<(Option<AgentIdentity>, HeaderMap)>>>;

/// A layer over a service that records what reached it.
fn service(
    params: AuthParams,
) -> (
    Arc<CountingMetrics>,
    Seen,
    impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
) {
    let m = Arc::new(CountingMetrics::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = service_fn(move |req: Request<()>| {
        let identity = req.extensions().get::<AgentIdentity>().cloned();
        log.lock().unwrap().push((identity, req.headers().clone()));
        async { Ok::<_, BoxError>(Response::new(())) }
    });
    (m.clone(), seen, AuthLayer::new(params, m).layer(inner))
}

fn with_header(name: &'static str, value: &str) -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut().insert(name, value.parse().unwrap());
    req
}

fn with_peer(identity: &str) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(PeerIdentity(identity.to_string()));
    req
}

#[tokio::test]
async fn a_valid_key_passes_with_its_name_and_is_not_forwarded() {
    let (_m, seen, svc) = service(params());
    svc.clone()
        .oneshot(with_header("authorization", &format!("Bearer {CI_KEY}")))
        .await
        .unwrap();
    svc.oneshot(with_header("x-api-key", DEV_KEY)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0.as_ref().unwrap().as_str(), "ci");
    assert_eq!(seen[1].0.as_ref().unwrap().as_str(), "dev");
    assert!(
        seen.iter()
            .all(|(_, headers)| !headers.contains_key("authorization") && !headers.contains_key("x-api-key"))
    );
}

#[tokio::test]
async fn missing_credentials_are_unauthenticated() {
    let (m, seen, svc) = service(params());
    for req in [
        Request::new(()),
        with_header("authorization", "Basic dXNlcjpwYXNz"),
        with_header("authorization", "Bearer "),
    ] {
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert!(err.downcast_ref::<Unauthenticated>().is_some(), "{err}");
    }
    assert_eq!(m.auth_rejected_count(AuthRejection::MissingCredentials), 3);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_forbidden() {
    let (m, seen, svc) = service(params());
    let err = svc
        .oneshot(with_header("authorization", "Bearer sk-guess"))
        .await
        .unwrap_err();
    let forbidden = err.downcast_ref::<Forbidden>().expect("a Forbidden error");
    assert_eq!(forbidden.reason(), AuthRejection::InvalidKey);
    assert_eq!(m.auth_rejected_count(AuthRejection::InvalidKey), 1);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mtls_identities_are_checked_against_the_allow_list() {
    let (m, seen, svc) = service(params());
    svc.clone().oneshot(with_peer("spiffe://agents/runner")).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].0.as_ref().unwrap().as_str(),
        "spiffe://agents/runner"
    );
    let err = svc.oneshot(with_peer("spiffe://agents/intruder")).await.unwrap_err();
    let forbidden = err.downcast_ref::<Forbidden>().unwrap();
    assert_eq!(forbidden.reason(), AuthRejection::IdentityNotAllowed);
    assert_eq!(m.auth_rejected_count(AuthRejection::IdentityNotAllowed), 1);
}

#[tokio::test]
async fn either_credential_suffices_and_a_foreign_header_is_kept() {
    let (_m, seen, svc) = service(params());
    // A bearer token meant for the upstream, plus an allowed certificate:
    // the certificate lets the request in and the header goes through.
    let mut req = with_peer("spiffe://agents/runner");
    req.headers_mut()
        .insert("authorization", "Bearer upstream-token".parse().unwrap());
    svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1["authorization"], "Bearer upstream-token");
}

#[tokio::test]
async fn forwarding_credentials_can_be_enabled() {
    let (_m, seen, svc) = service(params().with_forward_credentials(true));
    svc.oneshot(with_header("x-api-key", CI_KEY)).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].1["x-api-key"], CI_KEY);
}

#[test]
fn the_upgrade_path_gets_the_same_answers() {
    let auth = Authenticator::new(params(), Arc::new(crate::NoopMetrics));
    let ok = with_header("x-api-key", CI_KEY);
    assert_eq!(auth.authenticate(ok.headers(), ok.extensions()).unwrap().as_str(), "ci");
    let none = Request::new(());
    let err = auth.authenticate(none.headers(), none.extensions()).unwrap_err();
    assert_eq!(err.reason(), AuthRejection::MissingCredentials);
    assert!(err.into_box_error().downcast_ref::<Unauthenticated>().is_some());

    let (mut parts, ()) = with_header("authorization", &format!("bearer {DEV_KEY}")).into_parts();
    let identity = auth.admit_parts(&mut parts).unwrap();
    assert_eq!(identity.as_str(), "dev");
    assert_eq!(parts.extensions.get::<AgentIdentity>(), Some(&identity));
    assert!(!parts.headers.contains_key("authorization"));
}

#[test]
fn keys_are_hashed_in_the_config_form() {
    let hash = hash_api_key("hello");
    assert_eq!(
        hash,
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let parsed: ApiKeyHash = hash.parse().unwrap();
    assert_eq!(parsed.to_string(), hash);
    assert!(parsed.ct_matches(&ApiKeyHash::of(b"hello")));
}

#[test]
fn comparison_is_constant_time_over_every_key() {
    // Hashes that differ only in their last byte: a short-circuiting
    // comparison would answer fastest for the most different ones; `subtle`
    // looks at every byte of every key.
    let a = ApiKeyHash::of(b"key-a");
    let mut near: [u8; 32] = Sha256Bytes::of(b"key-a");
    near[31] ^= 1;
    let near: ApiKeyHash = format!("sha256:{}", hex::encode(near)).parse().unwrap();
    assert!(!a.ct_matches(&near));

    // The match is selected without branching on which key matched, so
    // first, middle and last keys are found alike.
    let names = ["k0", "k1", "k2", "k3"];
    let table = KeyTable::new(
        names
            .iter()
            .map(|n| NamedKey {
                name: Arc::from(*n),
                hash: ApiKeyHash::of(format!("secret-{n}").as_bytes()),
            })
            .collect(),
    );
    for n in names {
        let found = table.find(format!("secret-{n}").as_bytes()).unwrap();
        assert_eq!(&**found, n);
    }
    assert!(table.find(b"secret-k9").is_none());
}

/// The raw SHA-256 of some bytes.
struct Sha256Bytes;

impl Sha256Bytes {
    fn of(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }
}

#[test]
fn params_errors_name_the_parameter_and_never_echo_a_key() {
    let err = AuthParams::new([("ci", "sk-live-raw-key-pasted-by-mistake")], [""; 0]).unwrap_err();
    assert_eq!(err.param(), "api_keys");
    assert!(!err.to_string().contains("sk-live"), "{err}");
    assert!(err.to_string().contains("sha256:<64 hex digits>"));

    let twice = [("ci", hash_api_key("a")), ("ci", hash_api_key("b"))];
    let err = AuthParams::new(twice, [""; 0]).unwrap_err();
    assert_eq!(err.to_string(), r#"api_keys name "ci" is used twice"#);

    let none: [(&str, &str); 0] = [];
    let err = AuthParams::new(none, [""; 0]).unwrap_err();
    assert!(err.to_string().contains("at least one"));

    let err = AuthParams::new(none, [""]).unwrap_err();
    assert_eq!(err.param(), "allowed_identities");

    let only_mtls = AuthParams::new(none, ["spiffe://a"]).unwrap();
    assert_eq!(only_mtls.key_names().count(), 0);
}
