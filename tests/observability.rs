//! Observability end to end: metrics that move with traffic, a valid
//! exposition, OTLP spans with the agent's trace as parent, the admin API
//! (sessions, drain, reload under live sessions, refused reloads).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Response;
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::Message;

use agentmux_tests::client::{get_plain, read, send_plain};
use agentmux_tests::upstream::{full, spawn_http};
use agentmux_tests::{Gateway, eventually, ws};

const CONFIG: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "sessions"
match = { path_prefix = "/ws" }
mode = "websocket"
cluster = "echo"
[[routes]]
name = "api"
cluster = "echo"
[clusters.echo]
kind = "echo"
"#;

/// The value of one sample line of the exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(&format!("{name}{{")) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_traffic_and_the_exposition_is_valid() {
    let gw = Gateway::start(CONFIG);
    let before = gw.admin_get("/metrics").await.1;
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    for i in 0..25 {
        c.send(Message::text(format!("m{i}"))).await.unwrap();
        c.next().await.unwrap().unwrap();
    }
    for _ in 0..7 {
        assert_eq!(get_plain(gw.addr(), "/x", &[]).await.status, 200);
    }
    let up = [("route", "sessions"), ("direction", "upstream")];
    let down = [("route", "sessions"), ("direction", "downstream")];
    // Counters are live: no need to end the session first.
    let after = eventually(Duration::from_secs(10), || async {
        let text = gw.admin_get("/metrics").await.1;
        (sample(&text, "agentmux_ws_messages_total", &down) >= 25.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&after, "agentmux_ws_messages_total", &up) - sample(&before, "agentmux_ws_messages_total", &up),
        25.0
    );
    assert_eq!(sample(&after, "agentmux_ws_messages_total", &down), 25.0);
    assert_eq!(
        sample(&after, "agentmux_sessions_active", &[("route", "sessions")]),
        1.0
    );
    let ok = [("route", "api"), ("status_class", "2xx")];
    assert_eq!(sample(&after, "agentmux_http_requests_total", &ok), 7.0);
    assert_eq!(
        sample(
            &after,
            "agentmux_http_request_duration_seconds_count",
            &[("route", "api")]
        ),
        7.0
    );
    assert_eq!(
        sample(
            &after,
            "agentmux_pool_connections",
            &[("cluster", "echo"), ("pool", "http"), ("state", "ready")]
        ) + sample(
            &after,
            "agentmux_pool_connections",
            &[("cluster", "echo"), ("pool", "http"), ("state", "active")]
        ),
        2.0
    );
    // No session ids or raw paths in labels.
    assert!(!after.contains("/x"), "raw path leaked into labels");
    // promtool (CI installs it) agrees the exposition is valid.
    let promtool = std::process::Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        promtool || !agentmux_tests::browser::tools_required(),
        "promtool is required (apt-get install prometheus)"
    );
    if !promtool {
        eprintln!("SKIPPED: promtool check (apt-get install prometheus)");
    }
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(after.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let msg = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool: {msg}");
    }
    c.close(None).await.unwrap();
}

/// A tiny OTLP/HTTP receiver: collects the raw protobuf bodies.
async fn otlp_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let addr = spawn_http(move |req| {
        let got = g2.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            got.lock().unwrap().push(body);
            Response::new(full(""))
        }
    })
    .await;
    (addr, got)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_the_agents_trace_as_parent() {
    let (collector, got) = otlp_receiver().await;
    let gw = Gateway::start(&format!(
        "[telemetry]\notlp_endpoint = \"http://{collector}\"\nsampling_ratio = 1.0\n{CONFIG}"
    ));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let r = get_plain(gw.addr(), "/traced", &[("traceparent", &traceparent)]).await;
    assert_eq!(r.status, 200);
    // The upstream got the same trace, with the gateway's span as parent.
    let seen = r.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts[1], trace_id);
    assert_ne!(parts[2], parent_id);
    let gateway_span = parts[2].to_owned();
    // A request with no traceparent starts a new trace.
    let fresh = get_plain(gw.addr(), "/untraced", &[]).await;
    let fresh_tp = fresh.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    assert!(!fresh_tp.contains(trace_id));
    // The exported span carries the agent's trace id and parent span id.
    let body = eventually(Duration::from_secs(20), || async {
        let all: Vec<u8> = got.lock().unwrap().iter().flat_map(|b| b.to_vec()).collect();
        let want = unhex(&gateway_span);
        all.windows(8).any(|w| w == want.as_slice()).then_some(all)
    })
    .await;
    let contains = |h: &str| {
        let n = unhex(h);
        body.windows(n.len()).any(|w| w == n.as_slice())
    };
    assert!(contains(trace_id), "trace id not exported");
    assert!(contains(parent_id), "parent span id not exported");
    assert!(String::from_utf8_lossy(&body).contains("agentmux.request"));
    let _ = hex(&[]);
}

#[tokio::test]
async fn sessions_are_listed_and_endpoints_can_be_drained() {
    let (up_a, log_a) = ws::spawn_upstream(ws::Script::Echo).await;
    let (up_b, log_b) = ws::spawn_upstream(ws::Script::Echo).await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"s\"\nmode = \"websocket\"\ncluster = \"up\"\n[clusters.up]\nendpoints = [\"{up_a}\", \"{up_b}\"]\nstrategy = \"round-robin\"\n[clusters.up.pool]\nmin_connections = 0\n"
    ));
    let (status, body) = gw.admin_get(&format!("/api/clusters/up/endpoints/{up_b}/drain")).await;
    assert_eq!(status, 404, "drain is a POST: {body}");
    let r = read(
        send_plain(
            gw.admin,
            http::Request::post(format!("/api/clusters/up/endpoints/{up_b}/drain"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ws::connect(gw.addr(), None, "/", None).await.unwrap().0);
    }
    assert_eq!(
        log_b.lock().unwrap().heads.len(),
        0,
        "a drained endpoint got new sessions"
    );
    assert_eq!(log_a.lock().unwrap().heads.len(), 4);
    // A session is listed once its upgrade completes on the gateway's side,
    // which may be a moment after the agent read its 101.
    let page = eventually(Duration::from_secs(10), || async {
        let page: serde_json::Value =
            serde_json::from_str(&gw.admin_get("/api/sessions?route=s&limit=3").await.1).unwrap();
        (page["total"] == 4).then_some(page)
    })
    .await;
    assert_eq!(page["total"], 4);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(page["sessions"][0]["agent"], "127.0.0.1");
    drop(clients);
    eventually(Duration::from_secs(10), || async {
        let page: serde_json::Value = serde_json::from_str(&gw.admin_get("/api/sessions").await.1).unwrap();
        (page["total"] == 0).then_some(())
    })
    .await;
}

async fn reload(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = read(
        send_plain(
            gw.admin,
            http::Request::post("/api/reload")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await,
    )
    .await;
    (r.status, r.json())
}

#[tokio::test]
async fn reload_under_live_sessions_drops_none_and_a_bad_file_changes_nothing() {
    let gw = Gateway::start(CONFIG);
    let config_path = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(ws::connect(gw.addr(), None, "/ws", None).await.unwrap().0);
    }
    // A broken file: refused with the key path, the old routes still serve.
    std::fs::write(
        &config_path,
        text.replace("cluster = \"echo\"\n[clusters", "cluster = \"nope\"\n[clusters"),
    )
    .unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("routes[1].cluster"),
        "{body}"
    );
    assert_eq!(get_plain(gw.addr(), "/still", &[]).await.status, 200);
    // A good change: a new route appears; live sessions are untouched.
    let added = text.replace(
        "[[routes]]\nname = \"api\"",
        "[[routes]]\nname = \"new\"\nmatch = { path_prefix = \"/new\" }\ncluster = \"echo\"\n[[routes]]\nname = \"api\"",
    );
    std::fs::write(&config_path, added).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["report"]["clusters_kept"], 1,
        "the echo cluster keeps its warm pool"
    );
    let routes = gw.admin_get("/api/routes").await.1;
    assert!(routes.contains("\"new\""), "{routes}");
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("after reload {i}"))).await.unwrap();
        assert_eq!(
            c.next().await.unwrap().unwrap(),
            Message::text(format!("after reload {i}"))
        );
    }
}

/// The shipped Prometheus rules and Grafana dashboard use only metrics the
/// gateway exports, and promtool accepts the rules and scrape config.
#[tokio::test]
async fn shipped_rules_and_dashboard_match_the_exported_metrics() {
    // Every family gets samples: a breaker and a limit, and one failed request.
    let down = agentmux_tests::upstream::closed_port();
    let gw = Gateway::start(&format!(
        "{CONFIG}[[routes]]\nname = \"down\"\nmatch = {{ path_prefix = \"/down\" }}\ncluster = \"down\"\nfilters = [\"breaker\", \"limit\"]\n[clusters.down]\nendpoints = [\"{down}\"]\n[filters.breaker]\nkind = \"circuit-breaker\"\n[filters.limit]\nkind = \"rate-limit\"\nrequests_per_second = 100\n"
    ));
    assert_eq!(get_plain(gw.addr(), "/down", &[]).await.status, 502);
    let text = gw.admin_get("/metrics").await.1;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(root.join(file)).unwrap();
        let mut used: Vec<&str> = body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("agentmux_"))
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(!used.is_empty());
        for name in used {
            let base = name.trim_end_matches("_bucket");
            assert!(
                families.contains(&base),
                "{file} uses {name}, which /metrics does not export"
            );
        }
    }
    for args in [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]] {
        if let Ok(out) = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&root)
            .output()
        {
            assert!(
                out.status.success(),
                "promtool {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
