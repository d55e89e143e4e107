//! `agentmux validate` and start-up errors, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agentmux_tests::{TempDir, gateway_bin};

fn validate(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(gateway_bin()).arg("validate").arg(path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:8443"

[[routes]]
name = "all"
cluster = "backend"

[clusters.backend]
endpoints = ["127.0.0.1:18080"]
"#;

#[test]
fn every_example_config_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // Example configs name certificate paths relative to the repo root.
            let out = Command::new(gateway_bin())
                .arg("validate")
                .arg(&path)
                .current_dir(&root)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen >= 1);
}

fn broken(edit: impl Fn(&str) -> String) -> String {
    let dir = TempDir::new("cfg");
    let path = dir.write("bad.toml", &edit(GOOD));
    let (ok, _, err) = validate(&path);
    assert!(!ok, "validate accepted a broken file");
    assert!(err.contains("bad.toml"), "error does not name the file: {err}");
    err
}

#[test]
fn good_file_passes() {
    let dir = TempDir::new("cfg");
    let (ok, out, err) = validate(&dir.write("good.toml", GOOD));
    assert!(ok, "{err}");
    assert!(out.contains("ok (1 listeners, 1 routes, 1 clusters)"), "{out}");
}

#[test]
fn unknown_key_is_named() {
    let err = broken(|g| g.replace("name = \"all\"", "name = \"all\"\nclustr = \"x\""));
    assert!(err.contains("routes[0].clustr: unknown field `clustr`"), "{err}");
}

#[test]
fn bad_address_is_named() {
    let err = broken(|g| g.replace("127.0.0.1:18080", "127.0.0.1:port"));
    assert!(
        err.contains("clusters.backend.endpoints[0]: invalid address \"127.0.0.1:port\""),
        "{err}"
    );
}

#[test]
fn min_above_max_is_named() {
    let err = broken(|g| format!("{g}[clusters.backend.pool]\nmin_connections = 9\nmax_connections = 3\n"));
    assert!(
        err.contains("clusters.backend.pool.max_connections: must be >= min_connections (9), got 3"),
        "{err}"
    );
}

#[test]
fn route_to_missing_cluster_is_named() {
    let err = broken(|g| g.replace("cluster = \"backend\"", "cluster = \"llm\""));
    assert!(err.contains("routes[0].cluster: no cluster named \"llm\""), "{err}");
}

#[test]
fn unreadable_certificate_is_named() {
    let err = broken(|g| {
        g.replace(
            "listen = \"127.0.0.1:8443\"",
            "listen = \"127.0.0.1:8443\"\ntls = { cert = \"missing/server.crt\", key = \"missing/server.key\" }",
        )
    });
    assert!(err.contains("listeners[0].tls.cert"), "{err}");
    assert!(err.contains("missing/server.crt"), "{err}");
}

#[test]
fn several_errors_are_all_reported() {
    let err = broken(|g| {
        g.replace("127.0.0.1:18080", "nope")
            .replace("cluster = \"backend\"", "cluster = \"x\"")
    });
    assert!(err.contains("2 errors"), "{err}");
}

#[test]
fn run_with_a_broken_file_exits_2_and_names_the_key() {
    let dir = TempDir::new("cfg");
    let path = dir.write("bad.toml", &GOOD.replace("127.0.0.1:8443", "127.0.0.1:99999"));
    let out = Command::new(gateway_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners[0].listen"));
}

#[test]
fn address_in_use_fails_with_the_listener_named() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = TempDir::new("cfg");
    let text = GOOD.replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"));
    let path = dir.write("inuse.toml", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{text}"));
    let out = Command::new(gateway_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0] (agents): cannot listen on"), "{err}");
}
