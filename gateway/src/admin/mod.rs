//! The admin listener: health, readiness and the JSON admin API.
//!
//! Bound to localhost by default; when `admin.token` is set every request
//! but `/healthz` needs `Authorization: Bearer <token>` (401 otherwise).

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::gateway::Gateway;
use crate::pool::LifeState;

mod dashboard;

/// Serves the admin API until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    token: Option<Arc<str>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (gateway, token) = (gateway.clone(), token.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (gateway, token) = (gateway.clone(), token.clone());
                async move { Ok::<_, Infallible>(route(&gateway, token.as_deref(), req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn route(gateway: &Gateway, token: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    // The dashboard's static files hold no data; the page itself sends the
    // token on its data requests.
    if let Some(asset) = path.strip_prefix("/dashboard").map(|p| p.trim_start_matches('/'))
        && let Some((content_type, body)) = crate::analytics::assets::asset(asset)
    {
        let mut r = Response::new(full(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return r;
    }
    // EventSource cannot set headers: the dashboard's data also takes `?token=`.
    let query_token_ok = |expected: &str| {
        path.starts_with("/dashboard/")
            && query_param(req.uri().query().unwrap_or(""), "token")
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())))
    };
    if let Some(expected) = token
        && !bearer_matches(&req, expected)
        && !query_token_ok(expected)
    {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthenticated", "message": "admin API needs Authorization: Bearer <admin.token>"}),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/readyz") => readyz(gateway),
        (&Method::GET, "/metrics") => {
            if let Some(a) = gateway.analytics() {
                gateway.metrics().set_alert_stats(&a.stats());
            }
            let text = gateway.metrics().encode(&gateway.runtime());
            let mut r = Response::new(full(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/api/circuits") => json_response(StatusCode::OK, &circuits(gateway)),
        (&Method::GET, "/api/sessions") => sessions(gateway, req.uri().query().unwrap_or("")),
        (&Method::GET, "/dashboard/feed") => dashboard::feed(gateway),
        (&Method::GET, "/dashboard/history") => dashboard::history(gateway, req.uri().query().unwrap_or("")).await,
        (&Method::GET, "/api/alerts") => dashboard::alerts(gateway),
        (&Method::GET, "/api/recommendations") => dashboard::recommendations(gateway),
        (&Method::POST, "/api/reload") => match gateway.reload().await {
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
        },
        (&Method::POST, p) if p.starts_with("/api/clusters/") => drain(gateway, p),
        (&Method::GET, "/api/routes") => json_response(StatusCode::OK, &routes(gateway)),
        (&Method::GET, "/api/clusters") => json_response(StatusCode::OK, &clusters(gateway)),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": format!("no admin endpoint {} {path}", req.method())}),
        ),
    }
}

fn bearer_matches<B>(req: &Request<B>, expected: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|got| bool::from(got.as_bytes().ct_eq(expected.as_bytes())))
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

pub(crate) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
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

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(format!("{v:#}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
