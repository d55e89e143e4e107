//! The built-in `echo` upstream (cluster `kind = "echo"`), served
//! in-process so the gateway works end to end with nothing else running.
//!
//! Each pooled "connection" to it is a fresh in-memory pipe served by a
//! hyper server, so it goes through the same pool, HTTP and WebSocket code
//! as a network upstream. It answers:
//!
//! - a WebSocket upgrade: echoes every frame back as it came (fragments,
//!   text, binary), answers pings, returns the agent's close code, and
//!   selects the first subprotocol offered;
//! - `Accept: text/event-stream`: an SSE stream of `events` token events
//!   (query parameter, default 5) `interval` apart (default `100ms`), then
//!   `event: done` — the shape of an LLM streaming API;
//! - anything else: `200` with a JSON description of the request (method,
//!   path, query, headers, body), bodies up to 1 MiB (413 beyond).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, WebSocketError};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::DuplexStream;

use crate::body::{Body, full};
use crate::config::parse_duration;

/// Largest request body the echo upstream reads.
const MAX_BODY: usize = 1 << 20;

/// Opens a pipe to a new echo server connection.
pub(crate) fn connect() -> DuplexStream {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let service = service_fn(handle);
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(server), service)
            .await
        {
            tracing::debug!(error = %e, "echo upstream connection ended with an error");
        }
    });
    client
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Ok(websocket(req));
    }
    let wants_sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        return Ok(sse(req.uri().query().unwrap_or("")));
    }
    Ok(describe(req).await)
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let protocol = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned());
    let (resp, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("bad WebSocket upgrade: {e}"));
        }
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(ws) => {
                if let Err(e) = echo_frames(ws).await {
                    tracing::debug!(error = %e, "echo WebSocket ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "echo WebSocket upgrade failed"),
        }
    });
    let (mut parts, _) = resp.into_parts();
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        parts.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Response::from_parts(parts, crate::body::empty())
}

async fn echo_frames(
    mut ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
) -> Result<(), WebSocketError> {
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(64 << 20);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                // Rebuilt without the client's mask: a server must send
                // unmasked frames (the fastwebsockets masking trap).
                let out = Frame::new(frame.fin, frame.opcode, None, frame.payload);
                ws.write_frame(out).await?;
            }
            OpCode::Close => return Ok(()),
            OpCode::Ping | OpCode::Pong => {}
        }
    }
}

fn sse(query: &str) -> Response<Body> {
    let mut events = 5u32;
    let mut interval = Duration::from_millis(100);
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "events" => events = v.parse().unwrap_or(events).min(100_000),
            "interval" => interval = parse_duration(v).unwrap_or(interval),
            _ => {}
        }
    }
    let stream = futures_util::stream::unfold(0u32, move |i| async move {
        if i > events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let text = if i == events {
            "event: done\ndata: {}\n\n".to_owned()
        } else {
            format!("id: {i}\nevent: token\ndata: {{\"index\":{i},\"token\":\"tok{i}\"}}\n\n")
        };
        Some((Ok::<_, Infallible>(BodyFrame::data(Bytes::from(text))), i + 1))
    });
    let mut resp = Response::new(crate::body::boxed(StreamBody::new(stream)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn describe(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body over 1 MiB"),
    };
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), v.into());
            }
        }
    }
    let doc = serde_json::json!({
        "echo": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_bytes": body.len(),
    });
    json(StatusCode::OK, &doc)
}

fn json(status: StatusCode, doc: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(format!("{doc:#}\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}
