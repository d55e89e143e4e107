use super::*;
use crate::config::Config;

fn router(routes: &str) -> Router {
    let text = format!("[[listeners]]\nlisten = \"127.0.0.1:1\"\n{routes}\n[clusters.c]\nkind = \"echo\"\n");
    let config = Config::parse(&text, "t").unwrap();
    Router::new(config.routes())
}

fn pick<'a>(r: &'a Router, host: Option<&str>, path: &str, headers: &[(&str, &str)]) -> Option<&'a str> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    r.route(host, path, &map).map(|r| r.name())
}

const TABLE: &str = r#"
[[routes]]
name = "catch-all"
cluster = "c"
[[routes]]
name = "ws"
match = { path_prefix = "/ws" }
cluster = "c"
[[routes]]
name = "ws-beta"
match = { path_prefix = "/ws", headers = [{ name = "x-beta" }] }
cluster = "c"
[[routes]]
name = "ws-agent-7"
match = { path_prefix = "/ws", headers = [{ name = "x-beta" }, { name = "x-agent", value = "7" }] }
cluster = "c"
[[routes]]
name = "wild"
match = { host = "*.example.com" }
cluster = "c"
[[routes]]
name = "wild-deep"
match = { host = "*.eu.example.com" }
cluster = "c"
[[routes]]
name = "exact"
match = { host = "api.example.com" }
cluster = "c"
[[routes]]
name = "exact-v2"
match = { host = "api.example.com", path_prefix = "/v2" }
cluster = "c"
"#;

#[test]
fn most_specific_wins() {
    let r = router(TABLE);
    assert_eq!(pick(&r, Some("other.test"), "/", &[]), Some("catch-all"));
    assert_eq!(pick(&r, Some("other.test"), "/ws/chat", &[]), Some("ws"));
    assert_eq!(pick(&r, Some("other.test"), "/ws", &[("x-beta", "1")]), Some("ws-beta"));
    assert_eq!(
        pick(&r, Some("other.test"), "/ws", &[("x-beta", "1"), ("x-agent", "7")]),
        Some("ws-agent-7")
    );
    assert_eq!(
        pick(&r, Some("other.test"), "/ws", &[("x-beta", "1"), ("x-agent", "8")]),
        Some("ws-beta")
    );
    assert_eq!(pick(&r, Some("a.example.com"), "/ws", &[]), Some("wild"));
    assert_eq!(pick(&r, Some("a.eu.example.com"), "/", &[]), Some("wild-deep"));
    assert_eq!(pick(&r, Some("API.example.com:8443"), "/v1", &[]), Some("exact"));
    assert_eq!(pick(&r, Some("api.example.com"), "/v2/chat", &[]), Some("exact-v2"));
    assert_eq!(pick(&r, Some("api.example.com."), "/v2", &[]), Some("exact-v2"));
}

#[test]
fn wildcard_needs_a_label_and_prefix_needs_a_boundary() {
    let r = router(TABLE);
    assert_eq!(pick(&r, Some("example.com"), "/", &[]), Some("catch-all"));
    assert_eq!(pick(&r, Some("x"), "/wsx", &[]), Some("catch-all"));
    assert_eq!(pick(&r, None, "/ws/", &[]), Some("ws"));
}

#[test]
fn no_match_is_none_and_ties_keep_file_order() {
    let r = router(
        "[[routes]]\nname = \"first\"\nmatch = { path_prefix = \"/a\" }\ncluster = \"c\"\n\
         [[routes]]\nname = \"second\"\nmatch = { path_prefix = \"/a\" }\ncluster = \"c\"\n",
    );
    assert_eq!(pick(&r, None, "/a", &[]), Some("first"));
    assert_eq!(pick(&r, None, "/b", &[]), None);
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(normalize_host("Example.COM:443"), "example.com");
    assert_eq!(normalize_host("[::1]:8443"), "::1");
    assert_eq!(normalize_host("localhost"), "localhost");
}
