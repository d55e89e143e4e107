use http::{Method, Request, Version, header};

use super::*;

fn parts(method: Method, uri: &str, hosts: &[&str]) -> Parts {
    let mut b = Request::builder().method(method).version(Version::HTTP_11).uri(uri);
    for h in hosts {
        b = b.header(header::HOST, *h);
    }
    b.header("x-forwarded-for", "6.6.6.6").body(()).unwrap().into_parts().0
}

fn peer() -> Peer {
    Peer {
        addr: "192.0.2.7".parse().unwrap(),
        tls: false,
    }
}

#[test]
fn one_request_leaves_the_edge_with_one_host_one_path_and_our_forwarding() {
    let mut p = parts(Method::GET, "http://open.example/x/../admin?a=1", &["api.example"]);
    let admitted = admit(&mut p, peer(), &EdgePolicy::default()).unwrap();
    assert_eq!(admitted.host.unwrap().as_str(), "open.example");
    assert_eq!(p.uri.to_string(), "/admin?a=1");
    assert_eq!(p.headers[header::HOST], "open.example");
    assert_eq!(p.headers["x-forwarded-for"], "192.0.2.7");
    assert_eq!(p.headers["x-forwarded-host"], "open.example");
    assert_eq!(p.extensions.get::<RawPath>().unwrap().0.as_str(), "/x/../admin?a=1");
}

#[test]
fn a_normal_request_is_not_copied() {
    let mut p = parts(Method::GET, "/v1/chat?stream=1", &["a.example"]);
    admit(&mut p, peer(), &EdgePolicy::default()).unwrap();
    assert_eq!(p.uri.to_string(), "/v1/chat?stream=1");
    assert!(p.extensions.get::<RawPath>().is_none());
}

#[test]
fn refusals_carry_their_cause() {
    let mut p = parts(Method::GET, "/ok/..%2f..%2fadmin", &["a.example"]);
    let e = admit(&mut p, peer(), &EdgePolicy::default()).unwrap_err();
    assert_eq!(e.status(), 400);
    let mut p = parts(Method::GET, "/x", &["a.example", "b.example"]);
    assert_eq!(admit(&mut p, peer(), &EdgePolicy::default()).unwrap_err().status(), 400);
    let mut p = parts(Method::CONNECT, "a.example:443", &["a.example:443"]);
    assert_eq!(admit(&mut p, peer(), &EdgePolicy::default()).unwrap_err().status(), 405);
}

#[test]
fn trusted_proxies_keep_the_chain() {
    let policy = EdgePolicy {
        trusted_proxies: vec!["192.0.2.0/24".parse().unwrap()],
        ..EdgePolicy::default()
    };
    let mut p = parts(Method::GET, "/x", &["a.example"]);
    admit(&mut p, peer(), &policy).unwrap();
    assert_eq!(p.headers["x-forwarded-for"], "6.6.6.6, 192.0.2.7");
}

/// Found by the `request_head` fuzz target: `0PTIONS * HTTP/1.1` was
/// admitted and routed to the catch-all.
#[test]
fn the_asterisk_form_is_only_for_options() {
    let mut p = parts(Method::from_bytes(b"0PTIONS").unwrap(), "*", &["a.example"]);
    assert_eq!(admit(&mut p, peer(), &EdgePolicy::default()).unwrap_err().status(), 400);
    let mut p = parts(Method::GET, "*", &["a.example"]);
    assert_eq!(admit(&mut p, peer(), &EdgePolicy::default()).unwrap_err().status(), 400);
    let mut p = parts(Method::OPTIONS, "*", &["a.example"]);
    admit(&mut p, peer(), &EdgePolicy::default()).unwrap();
    assert_eq!(p.uri.path(), "*");
}
