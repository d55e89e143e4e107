//! The authenticated admin endpoints: readiness, metrics, the JSON API
//! (routes, clusters, circuits, sessions), reload and drain, and the
//! dashboard's data. Requests reach [`dispatch`] only after the checks in
//! `super` (host, cross-site, token) passed.

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::{dashboard, json_response, query_param, text};
use crate::body::{Body, full};
use crate::gateway::Gateway;
use crate::pool::LifeState;

/// Answers an authenticated request.
pub(super) async fn dispatch(gateway: &Gateway, method: &Method, path: &str, query: &str) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/readyz") => readyz(gateway),
        (&Method::GET, "/metrics") => metrics(gateway),
        (&Method::GET, "/api/circuits") => json_response(StatusCode::OK, &circuits(gateway)),
        (&Method::GET, "/api/sessions") => sessions(gateway, query),
        (&Method::GET, "/dashboard/feed") => dashboard::feed(gateway),
        (&Method::GET, "/dashboard/history") => dashboard::history(gateway, query).await,
        (&Method::GET, "/api/alerts") => dashboard::alerts(gateway),
        (&Method::GET, "/api/recommendations") => dashboard::recommendations(gateway),
        (&Method::POST, "/api/reload") => reload(gateway).await,
        (&Method::POST, p) if p.starts_with("/api/clusters/") => drain(gateway, p),
        (&Method::GET, "/api/routes") => json_response(StatusCode::OK, &routes(gateway)),
        (&Method::GET, "/api/clusters") => json_response(StatusCode::OK, &clusters(gateway)),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("no admin endpoint {method} {path}")}),
        ),
    }
}

fn metrics(gateway: &Gateway) -> Response<Body> {
    if let Some(a) = gateway.analytics() {
        a.stats().export(gateway.metrics());
    }
    gateway.runtime().export_gauges(gateway.metrics());
    let text = gateway.metrics().encode();
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn reload(gateway: &Gateway) -> Response<Body> {
    match gateway.reload().await {
        Ok(report) => json_response(StatusCode::OK, &json!({ "reloaded": true, "report": report })),
        Err(e) => {
            let errors: Vec<Value> = e
                .errors()
                .iter()
                .map(|x| json!({ "path": x.path(), "message": x.message() }))
                .collect();
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "reloaded": false, "error": "invalid_config", "message": e.to_string(), "errors": errors }),
            )
        }
    }
}

/// Ready when the config is loaded (it is, or we would not be running),
/// listeners are bound (they are before the admin listener starts) and
/// every pool holds its minimum of warm connections.
fn readyz(gateway: &Gateway) -> Response<Body> {
    let rt = gateway.runtime();
    let cold: Vec<&str> = rt
        .clusters()
        .values()
        .filter(|c| !c.is_warm())
        .map(|c| c.name())
        .collect();
    if cold.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "warming_clusters": cold}),
        )
    }
}

fn routes(gateway: &Gateway) -> Value {
    let rt = gateway.runtime();
    let list: Vec<Value> = rt
        .router()
        .routes()
        .map(|r| json!({ "name": r.name(), "mode": r.mode().as_str(), "cluster": r.cluster() }))
        .collect();
    json!({ "routes": list })
}

fn clusters(gateway: &Gateway) -> Value {
    let rt = gateway.runtime();
    let list: Vec<Value> = rt
        .clusters()
        .values()
        .map(|c| {
            let endpoints: Vec<Value> = c
                .endpoints()
                .iter()
                .map(|e| {
                    let pools: serde_json::Map<String, Value> =
                        [("http", e.http.as_ref()), ("websocket", e.raw.as_ref())]
                            .into_iter()
                            .filter_map(|(k, p)| p.map(|p| (k.to_owned(), states(&p.snapshot()))))
                            .collect();
                    json!({
                        "address": e.label(),
                        "weight": e.weight(),
                        "healthy": !e.is_ejected(),
                        "drained": e.is_drained(),
                        "active": e.active(),
                        "latency_ewma_ms": e.latency_ewma().as_secs_f64() * 1000.0,
                        "pools": pools,
                    })
                })
                .collect();
            json!({ "name": c.name(), "endpoints": endpoints, "pool": states(&c.pool_snapshot()) })
        })
        .collect();
    json!({ "clusters": list })
}

/// `POST /api/clusters/{cluster}/endpoints/{address}/drain` (or `/undrain`).
fn drain(gateway: &Gateway, path: &str) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches("/api/clusters/").split('/').collect();
    let (cluster, address, action) = match parts.as_slice() {
        [c, "endpoints", a, act @ ("drain" | "undrain")] => (*c, *a, *act),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "message": "use POST /api/clusters/{cluster}/endpoints/{address}/drain or /undrain"}),
            );
        }
    };
    let rt = gateway.runtime();
    let Some(ep) = rt
        .cluster(cluster)
        .and_then(|c| c.endpoints().iter().find(|e| e.label() == address).cloned())
    else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("no endpoint {address} in cluster {cluster}")}),
        );
    };
    ep.set_drained(action == "drain");
    tracing::info!(
        cluster,
        endpoint = address,
        action,
        "endpoint drain state changed by admin"
    );
    json_response(
        StatusCode::OK,
        &json!({ "cluster": cluster, "endpoint": address, "drained": ep.is_drained(), "active": ep.active() }),
    )
}

/// `GET /api/sessions?route=&agent=&offset=&limit=` (limit at most 1000).
fn sessions(gateway: &Gateway, query: &str) -> Response<Body> {
    let offset = query_param(query, "offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(1000);
    let page = gateway
        .sessions()
        .page(query_param(query, "route"), query_param(query, "agent"), offset, limit);
    json_response(StatusCode::OK, &serde_json::to_value(page).unwrap_or(Value::Null))
}

fn circuits(gateway: &Gateway) -> Value {
    let list: Vec<Value> = gateway
        .circuit_breakers()
        .into_iter()
        .flat_map(|(filter, set)| {
            set.circuits()
                .into_iter()
                .map(move |(scope, c)| json!({ "filter": &*filter, "scope": scope, "state": c.state().as_str() }))
        })
        .collect();
    json!({ "circuits": list })
}

fn states(s: &crate::pool::PoolSnapshot) -> Value {
    let mut m = serde_json::Map::new();
    for st in LifeState::ALL {
        m.insert(st.as_str().to_owned(), s.get(st).into());
    }
    m.insert("waiters".into(), s.waiters.into());
    m.insert("open".into(), s.open.into());
    Value::Object(m)
}
