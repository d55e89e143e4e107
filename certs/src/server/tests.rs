use std::sync::Arc;

use rcgen::SanType;
use rustls::ClientConfig;

use crate::dev::{DevCerts, ensure_dev_certs};
use crate::test_support::{TempDir, TestCa, handshake, self_signed};
use crate::{
    CertPaths, ClientAuth, SniResolver, client_config, client_config_with_identity, peer_identity, provider,
    server_config,
};

fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// Dev certificates plus a second certificate from the same dev CA.
struct DevSetup {
    _dir: TempDir,
    ca_cert: std::path::PathBuf,
    dev: CertPaths,
    api: CertPaths,
}

fn dev_setup(label: &str) -> DevSetup {
    let dir = TempDir::new(label);
    let dev = CertPaths::new(dir.join("dev/server.crt"), dir.join("dev/server.key"));
    let DevCerts::Generated { ca_path } = ensure_dev_certs(&dev.cert, &dev.key).unwrap() else {
        panic!("fresh directory should generate");
    };
    let ca = TestCa::from_files(&CertPaths::new(&ca_path, ca_path.with_file_name("ca.key")));
    let api = dir.write_pair("api", &ca.issue(&["api.example.test"]));
    DevSetup {
        _dir: dir,
        ca_cert: ca_path,
        dev,
        api,
    }
}

#[tokio::test]
async fn serves_the_certificate_for_each_sni_name() {
    let setup = dev_setup("tls-sni");
    let resolver = SniResolver::load(vec![setup.dev.clone(), setup.api.clone()]).unwrap();
    let server = Arc::new(server_config(resolver.clone(), alpn(), &ClientAuth::None).unwrap());
    let client = Arc::new(client_config(Some(&setup.ca_cert), alpn()).unwrap());
    let dev_leaf = crate::test_support::leaf(&resolver.resolve_name(Some("localhost")));
    let api_leaf = crate::test_support::leaf(&resolver.resolve_name(Some("api.example.test")));
    assert_ne!(dev_leaf, api_leaf);

    // The client verifies each against the dev CA (hostname included).
    let seen = handshake(server.clone(), client.clone(), "localhost").await;
    let (cert, proto) = seen.client.unwrap();
    assert_eq!(cert, dev_leaf);
    assert_eq!(proto.as_deref(), Some(&b"h2"[..]));
    seen.server.unwrap();

    let seen = handshake(server.clone(), client.clone(), "api.example.test").await;
    assert_eq!(seen.client.unwrap().0, api_leaf);

    // An IP address sends no SNI: the default (dev) certificate, valid for it.
    let seen = handshake(server.clone(), client.clone(), "127.0.0.1").await;
    assert_eq!(seen.client.unwrap().0, dev_leaf);
    let seen = handshake(server.clone(), client.clone(), "::1").await;
    assert_eq!(seen.client.unwrap().0, dev_leaf);

    // A name only the default covers... does not verify for another name.
    let seen = handshake(server, client, "unknown.example.test").await;
    assert!(seen.client.is_err(), "default cert must not verify for unknown names");
}

#[tokio::test]
async fn alpn_falls_back_and_tls12_works() {
    let setup = dev_setup("tls-alpn");
    let resolver = SniResolver::load(vec![setup.dev.clone()]).unwrap();
    let server = Arc::new(server_config(resolver, alpn(), &ClientAuth::None).unwrap());

    let http1 = Arc::new(client_config(Some(&setup.ca_cert), vec![b"http/1.1".to_vec()]).unwrap());
    let seen = handshake(server.clone(), http1, "localhost").await;
    assert_eq!(seen.client.unwrap().1.as_deref(), Some(&b"http/1.1"[..]));

    let roots = crate::load_roots(&setup.ca_cert).unwrap();
    let tls12 = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let seen = handshake(server, Arc::new(tls12), "localhost").await;
    seen.client.unwrap();
}

#[tokio::test]
async fn handshake_sees_reloaded_certificate_and_survives_a_broken_one() {
    let dir = TempDir::new("tls-reload");
    let ca = TestCa::new("reload ca");
    let ca_path = dir.write("ca.crt", &ca.pair.cert);
    let first = ca.issue(&["svc.test"]);
    let paths = dir.write_pair("svc", &first);
    let resolver = SniResolver::load(vec![paths.clone()]).unwrap();
    let server = Arc::new(server_config(resolver.clone(), alpn(), &ClientAuth::None).unwrap());
    let client = Arc::new(client_config(Some(&ca_path), alpn()).unwrap());

    let seen = handshake(server.clone(), client.clone(), "svc.test").await;
    assert_eq!(seen.client.unwrap().0, first.der);

    let second = ca.issue(&["svc.test"]);
    dir.write_pair("svc", &second);
    resolver.reload().unwrap();
    // Same ServerConfig: the resolver swap is all it takes.
    let seen = handshake(server.clone(), client.clone(), "svc.test").await;
    assert_eq!(seen.client.unwrap().0, second.der);

    std::fs::write(&paths.key, "garbage").unwrap();
    let err = resolver.reload().unwrap_err();
    assert!(err.to_string().starts_with(&paths.key.display().to_string()));
    let seen = handshake(server, client, "svc.test").await;
    assert_eq!(seen.client.unwrap().0, second.der);
}

#[tokio::test]
async fn required_client_auth_rejects_anonymous_and_names_the_client() {
    let dir = TempDir::new("tls-mtls");
    let ca = TestCa::new("agents ca");
    let ca_path = dir.write("ca.crt", &ca.pair.cert);
    let server_pair = dir.write_pair("server", &ca.issue(&["gw.test"]));
    let client_pair = dir.write_pair(
        "client",
        &ca.issue_client(
            "agent-7",
            vec![SanType::URI("spiffe://agentmux/agent-7".try_into().unwrap())],
        ),
    );
    let resolver = SniResolver::load(vec![server_pair]).unwrap();
    let required = Arc::new(server_config(resolver.clone(), alpn(), &ClientAuth::Required(ca_path.clone())).unwrap());

    let anonymous = Arc::new(client_config(Some(&ca_path), alpn()).unwrap());
    let seen = handshake(required.clone(), anonymous.clone(), "gw.test").await;
    assert!(seen.server.is_err(), "a client without a certificate must be rejected");

    // A certificate from another CA is rejected too.
    let stranger = TestCa::new("other ca");
    let stranger_pair = dir.write_pair("stranger", &stranger.issue_client("mallory", Vec::new()));
    let stranger_client = Arc::new(client_config_with_identity(Some(&ca_path), alpn(), &stranger_pair).unwrap());
    let seen = handshake(required.clone(), stranger_client, "gw.test").await;
    assert!(seen.server.is_err(), "a certificate from another CA must be rejected");

    let agent = Arc::new(client_config_with_identity(Some(&ca_path), alpn(), &client_pair).unwrap());
    let seen = handshake(required, agent.clone(), "gw.test").await;
    seen.client.unwrap();
    let chain = seen.server.unwrap().expect("client certificate");
    assert_eq!(peer_identity(&chain[0]).as_deref(), Some("spiffe://agentmux/agent-7"));

    // Optional: anonymous clients get in without a certificate, others are named.
    let optional = Arc::new(server_config(resolver, alpn(), &ClientAuth::Optional(ca_path)).unwrap());
    let seen = handshake(optional.clone(), anonymous, "gw.test").await;
    assert!(seen.server.unwrap().is_none());
    let seen = handshake(optional, agent, "gw.test").await;
    assert!(seen.server.unwrap().is_some());
}

#[test]
fn client_auth_with_a_bad_ca_file_names_it() {
    let dir = TempDir::new("tls-badca");
    let resolver = SniResolver::load(vec![dir.write_pair("s", &self_signed(&["s.test"]))]).unwrap();
    let missing = dir.join("missing-ca.crt");
    let err = server_config(resolver, alpn(), &ClientAuth::Required(missing.clone())).unwrap_err();
    assert!(err.to_string().starts_with(&missing.display().to_string()), "{err}");
}
