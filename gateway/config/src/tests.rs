use super::*;

const BASE: &str = r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:8443"

[[routes]]
name = "all"
cluster = "backend"

[clusters.backend]
endpoints = ["127.0.0.1:18080", { address = "backend.internal:443", weight = 3 }]
"#;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, "test.toml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn has(errs: &[String], needle: &str) -> bool {
    errs.iter().any(|e| e.contains(needle))
}

#[test]
fn base_config_is_valid_with_defaults() {
    let c = Config::parse(BASE, "test.toml").unwrap();
    assert_eq!(c.admin_addr(), "127.0.0.1:9901".parse().unwrap());
    let cluster = &c.clusters()["backend"];
    assert_eq!(cluster.pool, PoolParams::default());
    assert_eq!(cluster.strategy, Strategy::LeastConnections);
    let ClusterKind::Static(eps) = &cluster.kind else {
        panic!()
    };
    assert_eq!(eps[1].weight, 3);
    assert_eq!(
        eps[1].addr,
        EndpointAddr::Dns {
            host: "backend.internal".into(),
            port: 443
        }
    );
    assert_eq!(c.routes()[0].mode(), Mode::Http);
    assert_eq!(c.routes()[0].matcher.path_prefix, "/");
}

#[test]
fn unknown_key_is_named_with_its_path_and_line() {
    let text = format!("{BASE}\n[clusters.backend.pool]\nmax_conections = 5\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(has(&errs, "clusters.backend.pool"), "{errs:?}");
    assert!(has(&errs, "unknown field `max_conections`"), "{errs:?}");
    assert!(has(&errs, "line 14"), "{errs:?}");
}

#[test]
fn bad_address_names_key_and_value() {
    let errs = errors(&BASE.replace("127.0.0.1:8443", "localhost:99999"));
    assert!(
        has(&errs, "listeners[0].listen: invalid address \"localhost:99999\""),
        "{errs:?}"
    );
    let errs = errors(&BASE.replace("127.0.0.1:18080", "not an address"));
    assert!(
        has(
            &errs,
            "clusters.backend.endpoints[0]: invalid address \"not an address\""
        ),
        "{errs:?}"
    );
}

#[test]
fn min_above_max_is_rejected() {
    let text = format!("{BASE}\n[clusters.backend.pool]\nmin_connections = 10\nmax_connections = 5\n");
    let errs = errors(&text);
    assert!(
        has(
            &errs,
            "clusters.backend.pool.max_connections: must be >= min_connections (10), got 5"
        ),
        "{errs:?}"
    );
}

#[test]
fn route_to_missing_cluster_is_rejected() {
    let errs = errors(&BASE.replace("cluster = \"backend\"", "cluster = \"nope\""));
    assert!(
        has(&errs, "routes[0].cluster: no cluster named \"nope\" (defined: backend)"),
        "{errs:?}"
    );
}

#[test]
fn unreadable_certificate_is_named() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:8443\"",
        "listen = \"127.0.0.1:8443\"\ntls = { cert = \"/nonexistent/a.crt\", key = \"/nonexistent/a.key\" }",
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let errs: Vec<String> = config
        .check_files()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(has(&errs, "listeners[0].tls.cert"), "{errs:?}");
    assert!(has(&errs, "/nonexistent/a.crt"), "{errs:?}");
}

#[test]
fn dev_certs_to_be_generated_are_not_required_yet() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:8443\"",
        "listen = \"127.0.0.1:8443\"\ntls = { cert = \"/nonexistent/a.crt\", key = \"/nonexistent/a.key\", generate_dev_certs = true }",
    );
    Config::parse(&text, "test.toml").unwrap().check_files().unwrap();
}

#[test]
fn bad_duration_and_enums_name_the_value() {
    let text = format!("{BASE}\n[clusters.backend.pool]\nidle_timeout = \"5 minutes\"\n[log]\nformat = \"xml\"\n")
        .replace("name = \"all\"", "name = \"all\"\nmode = \"grpc\"");
    let errs = errors(&text);
    assert!(
        has(
            &errs,
            "clusters.backend.pool.idle_timeout: invalid duration \"5 minutes\""
        ),
        "{errs:?}"
    );
    assert!(has(&errs, "routes[0].mode: unknown mode \"grpc\""), "{errs:?}");
    assert!(
        has(&errs, "log.format: must be \"human\" or \"json\", got \"xml\""),
        "{errs:?}"
    );
}

#[test]
fn wrong_type_and_bad_toml_are_reported() {
    let errs = errors(&BASE.replace("name = \"agents\"", "name = 5"));
    assert!(has(&errs, "listeners[0].name"), "{errs:?}");
    let errs = errors("[[listeners]\n");
    assert!(has(&errs, "not valid TOML"), "{errs:?}");
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let errs = errors(&format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{BASE}"));
    assert!(
        has(&errs, "admin.token: required when admin.listen (0.0.0.0:9901)"),
        "{errs:?}"
    );
}

#[test]
fn duplicate_route_names_and_empty_sections() {
    let dup = format!("{BASE}\n[[routes]]\nname = \"all\"\ncluster = \"backend\"\n");
    assert!(has(&errors(&dup), "routes[1].name: duplicate name \"all\""));
    let errs = errors("");
    assert!(has(&errs, "listeners: at least one"), "{errs:?}");
    assert!(has(&errs, "routes: at least one"), "{errs:?}");
}

#[test]
fn matchers_are_normalised() {
    let text = BASE.replace(
        "name = \"all\"",
        "name = \"all\"\nmatch = { host = \"*.Example.com\", path_prefix = \"/ws/\", headers = [{ name = \"X-Agent\" }] }",
    );
    let c = Config::parse(&text, "t").unwrap();
    let m = &c.routes()[0].matcher;
    assert_eq!(m.host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(m.path_prefix, "/ws");
    assert_eq!(m.headers[0].name, "x-agent");
    let bad = BASE.replace("name = \"all\"", "name = \"all\"\nmatch = { path_prefix = \"ws\" }");
    assert!(has(&errors(&bad), "routes[0].match.path_prefix: must start with '/'"));
}

#[test]
fn echo_cluster_takes_no_endpoints() {
    let text = BASE.replace("[clusters.backend]", "[clusters.backend]\nkind = \"echo\"");
    assert!(has(&errors(&text), "clusters.backend.endpoints: an echo cluster"));
}

const FILTERED: &str = r#"
[[listeners]]
listen = "127.0.0.1:8443"

[[routes]]
name = "all"
cluster = "backend"
filters = ["limit", "retries", "breaker", "keys", "shed", "deadline"]

[clusters.backend]
endpoints = ["127.0.0.1:18080"]

[filters.limit]
kind = "rate-limit"
key = "header:x-agent-id"
requests_per_second = 50
messages_per_second = 10
max_sessions = 4

[filters.retries]
kind = "retry"
max_attempts = 3
budget_ratio = 0.2

[filters.breaker]
kind = "circuit-breaker"
consecutive_failures = 5

[filters.keys]
kind = "auth"
api_keys = { ci = "sha256:8d1c0f0d9cd6bdb0a3d3a4e48e1c3f0f7c0a1a8e1e5f0b9b1c1d2e3f4a5b6c7d" }

[filters.shed]
kind = "load-shed"
max_in_flight = 100

[filters.deadline]
kind = "timeout"
request = "30s"
idle = "5m"
"#;

#[test]
fn filters_parse_in_route_order() {
    let c = Config::parse(FILTERED, "t").unwrap();
    let names: Vec<&str> = c.routes()[0].filters.iter().map(|n| &**n).collect();
    assert_eq!(names, ["limit", "retries", "breaker", "keys", "shed", "deadline"]);
    let FilterConfig::RateLimit(rl) = &c.filters()["limit"] else {
        panic!()
    };
    assert_eq!(rl.requests, Some((50.0, 50)));
    assert_eq!(rl.max_sessions, Some(4));
}

#[test]
fn misconfigured_filters_name_the_key() {
    let errs = errors(&FILTERED.replace("kind = \"load-shed\"", "kind = \"load-shedding\""));
    assert!(
        has(&errs, "filters.shed.kind: unknown variant `load-shedding`"),
        "{errs:?}"
    );
    let errs = errors(&FILTERED.replace("requests_per_second = 50", "requests_per_second = 0"));
    assert!(has(&errs, "filters.limit.requests_per_second"), "{errs:?}");
    let errs = errors(&FILTERED.replace("budget_ratio = 0.2", "budget_ratio = 1.5"));
    assert!(has(&errs, "filters.retries.budget_ratio"), "{errs:?}");
    let errs = errors(&FILTERED.replace("\"shed\", \"deadline\"]", "\"shed\", \"nope\"]"));
    assert!(has(&errs, "routes[0].filters[5]: no filter named \"nope\""), "{errs:?}");
    let errs = errors(&FILTERED.replace("key = \"header:x-agent-id\"", "key = \"cookie:x\""));
    assert!(has(&errs, "filters.limit.key"), "{errs:?}");
    let errs = errors(&FILTERED.replace("max_attempts = 3", "max_attempts = 3\nretry_everything = true"));
    assert!(has(&errs, "unknown field `retry_everything`"), "{errs:?}");
    let errs = errors(&FILTERED.replace("sha256:8d1c", "md5:8d1c"));
    assert!(has(&errs, "filters.keys.api_keys"), "{errs:?}");
}

#[test]
fn runtime_worker_threads_is_optional_and_positive() {
    assert_eq!(Config::parse(BASE, "t").unwrap().worker_threads(), None);
    let one = format!("[runtime]\nworker_threads = 1\n{BASE}");
    assert_eq!(Config::parse(&one, "t").unwrap().worker_threads(), Some(1));
    let zero = format!("[runtime]\nworker_threads = 0\n{BASE}");
    assert!(has(&errors(&zero), "runtime.worker_threads: must be at least 1"));
}

#[test]
fn cluster_state_is_off_by_default_and_takes_defaults() {
    assert!(Config::parse(BASE, "test.toml").unwrap().cluster_state().is_none());
    let c = Config::parse(
        &format!("{BASE}\n[cluster_state]\nredis = \"redis://:s3cret@127.0.0.1:6379/2\"\n"),
        "test.toml",
    )
    .unwrap();
    let cs = c.cluster_state().unwrap();
    assert_eq!(cs.key_prefix(), "agentmux:");
    assert_eq!(cs.command_timeout(), Duration::from_millis(50));
    assert_eq!(cs.expected_instances(), 1);
    assert_eq!(cs.session_header().as_str(), "x-session-id");
    assert_eq!(cs.instance_id(), &InstanceId::HostnamePid);
    // The password never shows in logs or debug output.
    assert_eq!(cs.redis().to_string(), "redis://:***@127.0.0.1:6379/2");
    assert!(!format!("{cs:?}").contains("s3cret"));
    let id = cs.instance_id().resolve();
    assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
}

#[test]
fn cluster_state_errors_name_their_keys() {
    let errs = errors(&format!(
        "{BASE}\n[cluster_state]\ninstance_id = \"a b\"\ncommand_timeout = \"0ms\"\nexpected_instances = 0\nsession_header = \"bad header\"\n"
    ));
    assert!(has(&errs, "cluster_state.redis: required"), "{errs:?}");
    assert!(has(&errs, "cluster_state.instance_id: must be"), "{errs:?}");
    assert!(
        has(
            &errs,
            "cluster_state.command_timeout: must be within 1ms..=10s (got 0s)"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            "cluster_state.expected_instances: must be within 1..=1000 (got 0)"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, "cluster_state.session_header: invalid header name"),
        "{errs:?}"
    );
    let errs = errors(&format!("{BASE}\n[cluster_state]\nredis = \"http://x\"\n"));
    assert!(has(&errs, "cluster_state.redis: must be a redis://"), "{errs:?}");
    let errs = errors(&format!("{BASE}\n[cluster_state]\nredis = \"rediss://x:6380\"\n"));
    assert!(has(&errs, "cluster_state.redis: rediss://"), "{errs:?}");
}

#[test]
fn global_limits_need_cluster_state_and_a_request_rate() {
    let limit = "[filters.shared]\nkind = \"rate-limit\"\nscope = \"global\"\n";
    let errs = errors(&format!("{BASE}\n{limit}requests_per_second = 5\n"));
    assert!(
        has(&errs, "filters.shared.scope: \"global\" needs a [cluster_state] table"),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{BASE}\n{limit}max_sessions = 5\n[cluster_state]\nredis = \"redis://127.0.0.1:6379\"\n"
    ));
    assert!(
        has(&errs, "filters.shared.scope: \"global\" shares requests_per_second"),
        "{errs:?}"
    );
    Config::parse(
        &format!("{BASE}\n{limit}requests_per_second = 5\n[cluster_state]\nredis = \"redis://127.0.0.1:6379\"\n"),
        "test.toml",
    )
    .unwrap();
}

#[test]
fn mux_settings_take_defaults_and_errors_name_their_keys() {
    let c = Config::parse(BASE, "test.toml").unwrap();
    let mux = &c.clusters()["backend"].mux;
    assert_eq!((mux.connections, mux.path.as_str()), (2, "/agentmux"));
    assert_eq!((mux.replay_bytes, mux.replay_total_bytes), (1 << 20, 256 << 20));
    let bad = format!(
        "{BASE}[clusters.backend.mux]\nconnections = 0\npath = \"mux\"\nwindow_bytes = 10\nreplay_bytes = 4096\nreplay_total_bytes = 2048\nresume_timeout = \"soon\"\n"
    );
    let errs = errors(&bad);
    assert!(
        has(&errs, "clusters.backend.mux.connections: must be within 1..=64, got 0"),
        "{errs:?}"
    );
    assert!(has(&errs, "clusters.backend.mux.path: must start with '/'"), "{errs:?}");
    assert!(
        has(
            &errs,
            "clusters.backend.mux.window_bytes: must be at least 1024, got 10"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            "clusters.backend.mux.replay_total_bytes: must be at least replay_bytes (4096), got 2048"
        ),
        "{errs:?}"
    );
    assert!(has(&errs, "clusters.backend.mux.resume_timeout"), "{errs:?}");
}

#[test]
fn the_edge_is_safe_by_default() {
    let c = Config::parse(BASE, "test.toml").unwrap();
    let l = &c.listeners()[0];
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.tcp_keepalive, Some(Duration::from_secs(60)));
    assert_eq!(l.edge, EdgePolicy::default());
    assert!(l.edge.path.normalize && l.edge.path.merge_slashes);
    assert_eq!(l.edge.path.escaped_slashes, EscapedSlashes::Reject);
    assert!(l.edge.trusted_proxies.is_empty());
    let r = &c.routes()[0];
    assert_eq!(r.websocket.keepalive_interval, Some(Duration::from_secs(30)));
    assert_eq!(r.body.max_bytes, 32 << 20);
    assert_eq!(r.body.timeout, Some(Duration::from_secs(60)));
    assert_eq!(r.forward_path, ForwardPath::Normalized);
    assert_eq!(c.clusters()["backend"].tcp_keepalive, Some(Duration::from_secs(60)));
}

#[test]
fn edge_keys_are_validated_with_their_paths() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:8443\"",
        "listen = \"127.0.0.1:8443\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\nescaped_slashes = \"decode\"\nidle_timeout = \"0s\"",
    )
    .replace(
        "cluster = \"backend\"\n",
        "cluster = \"backend\"\nforward_path = \"verbatim\"\nrequest_body_timeout = \"soon\"\nmatch = { path_prefix = \"/a/../b\" }\n",
    );
    let errs = errors(&text);
    assert!(
        has(
            &errs,
            "listeners[0].trusted_proxies[1]: invalid address range \"10.0.0.0/40\""
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, "listeners[0].escaped_slashes: unknown action \"decode\""),
        "{errs:?}"
    );
    assert!(
        has(&errs, "listeners[0].idle_timeout: must be longer than 0s"),
        "{errs:?}"
    );
    assert!(
        has(&errs, "routes[0].forward_path: unknown value \"verbatim\""),
        "{errs:?}"
    );
    assert!(has(&errs, "routes[0].request_body_timeout"), "{errs:?}");
    assert!(
        has(&errs, "routes[0].match.path_prefix: must be a normalized path"),
        "{errs:?}"
    );
}

#[test]
fn edge_switches_loosen_what_they_name() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:8443\"",
        "listen = \"127.0.0.1:8443\"\nnormalize_path = false\nmerge_slashes = false\nescaped_slashes = \"keep\"\ntcp_keepalive = \"0s\"",
    )
    .replace(
        "cluster = \"backend\"\n",
        "cluster = \"backend\"\nforward_path = \"raw\"\nrequest_body_timeout = \"0s\"\nmax_request_body_bytes = 10\nwebsocket = { keepalive_interval = \"0s\" }\n",
    );
    let c = Config::parse(&text, "test.toml").unwrap();
    let l = &c.listeners()[0];
    assert!(!l.edge.path.normalize && !l.edge.path.merge_slashes);
    assert_eq!(l.edge.path.escaped_slashes, EscapedSlashes::Keep);
    assert_eq!(l.tcp_keepalive, None);
    let r = &c.routes()[0];
    assert_eq!(r.forward_path, ForwardPath::Raw);
    assert_eq!(
        r.body,
        BodyParams {
            max_bytes: 10,
            timeout: None
        }
    );
    assert_eq!(r.websocket.keepalive_interval, None);
}
