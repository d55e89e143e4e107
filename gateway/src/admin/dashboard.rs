//! The dashboard's data: a live feed over SSE (an update at least every
//! 500 ms), history windows, alerts and recommendations.

use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::watch;

use super::{json_response, query_param};
use crate::analytics::{Published, ScopeKey, Window, assets};
use crate::body::{Body, boxed, full};
use crate::gateway::Gateway;

/// How often the feed sends the latest state even when nothing changed,
/// so a page shows it is live.
const HEARTBEAT: Duration = Duration::from_millis(500);

fn off() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "analytics_off", "message": "analytics is disabled ([analytics] enabled = false)"}),
    )
}

/// `GET /dashboard`: the page, with a logout button when logins exist
/// (`admin.token` is set).
pub(super) fn page(with_logout: bool) -> Response<Body> {
    let html = if with_logout {
        assets::INDEX_HTML.replace("<!--logout-->", LOGOUT_FORM)
    } else {
        assets::INDEX_HTML.to_owned()
    };
    let mut r = Response::new(full(html));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

const LOGOUT_FORM: &str =
    r#"<form method="post" action="/dashboard/logout" class="logout"><button type="submit">log out</button></form>"#;

/// `GET /dashboard/<file>`: the page's scripts, styles and licence. They
/// hold no data, so they are served without a token (the login page needs
/// none of them).
pub(super) fn asset(path: &str) -> Option<Response<Body>> {
    if path.is_empty() || path == "index.html" {
        return None;
    }
    let (content_type, body) = assets::asset(path)?;
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(r)
}

/// `GET /dashboard/feed`: `text/event-stream` of feed updates.
pub(super) fn feed(gateway: &Gateway) -> Response<Body> {
    let Some(handle) = gateway.analytics() else {
        return off();
    };
    let stream = events(handle.subscribe()).map(|e| Ok::<_, std::convert::Infallible>(Frame::data(e)));
    let mut r = Response::new(boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// SSE events: the latest update at once, then after every change or
/// `HEARTBEAT`, whichever comes first, so the page never waits longer than
/// 500 ms.
fn events(rx: watch::Receiver<Arc<Published>>) -> impl Stream<Item = Bytes> {
    futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first {
            let _ = tokio::time::timeout(HEARTBEAT, rx.changed()).await;
        }
        let json = rx.borrow_and_update().json.clone();
        Some((Bytes::from(format!("data: {json}\n\n")), (rx, false)))
    })
}

/// `GET /dashboard/history?window=1h|24h|7d[&scope=route:x]`.
pub(super) async fn history(gateway: &Gateway, query: &str) -> Response<Body> {
    let Some(handle) = gateway.analytics() else {
        return off();
    };
    let window = match Window::parse(query_param(query, "window").unwrap_or("1h")) {
        Some(w) => w,
        None => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "message": "window must be 1h, 24h or 7d"}),
            );
        }
    };
    let scope = query_param(query, "scope").map(|s| s.replace("%3A", ":"));
    let key = match scope.as_deref().map(ScopeKey::parse) {
        Some(None) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "message": "scope must be global, route:NAME or cluster:NAME"}),
            );
        }
        Some(Some(k)) => Some(k),
        None => None,
    };
    match handle.history(window, key).await {
        Some(h) => json_response(StatusCode::OK, &serde_json::to_value(h).unwrap_or_default()),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "no such scope"}),
        ),
    }
}

/// `GET /api/alerts`: open and recent alerts.
pub(super) fn alerts(gateway: &Gateway) -> Response<Body> {
    let Some(handle) = gateway.analytics() else {
        return off();
    };
    let latest = handle.latest();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(&latest.update.alerts).unwrap_or_default(),
    )
}

/// `GET /api/recommendations`.
pub(super) fn recommendations(gateway: &Gateway) -> Response<Body> {
    let Some(handle) = gateway.analytics() else {
        return off();
    };
    let latest = handle.latest();
    json_response(
        StatusCode::OK,
        &json!({ "recommendations": serde_json::to_value(&latest.update.recommendations).unwrap_or_default() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Arc<Published> {
        let engine = crate::analytics::Engine::new(crate::analytics::AnalyticsParams::default());
        Arc::new(Published {
            seq: 0,
            update: crate::analytics::feed_update(&engine),
            json: "{}".into(),
        })
    }

    /// The feed sends at least every 500 ms of (paused, simulated) time
    /// with no change, and at once on a change.
    #[tokio::test(start_paused = true)]
    async fn feed_updates_at_least_every_half_second() {
        let (_tx, rx) = watch::channel(published());
        let mut feed = Box::pin(events(rx));
        let start = tokio::time::Instant::now();
        for i in 0..10u32 {
            feed.next().await.expect("an event");
            assert_eq!(start.elapsed(), HEARTBEAT * i, "event {i}");
        }
        let (tx, rx) = watch::channel(published());
        let mut feed = Box::pin(events(rx));
        feed.next().await.expect("first");
        let t0 = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(120)).await;
            let _ = tx.send(published());
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        feed.next().await.expect("on change");
        assert_eq!(t0.elapsed(), Duration::from_millis(120));
    }
}
