//! The HTTP kinds of the churn: requests on reused keep-alive connections,
//! connections dropped at three points, and slowloris heads.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Churn, HTTP_PATH, filler};
use crate::soak::wire::{head_end, status_of};

/// Label of the keep-alive connection observations.
const CONN: &str = "http_keepalive/conn";
/// One header line dripped per this interval.
const DRIP: Duration = Duration::from_millis(500);

/// One to four echoed POSTs on a pooled keep-alive connection (a new one
/// when none is pooled). Each request is counted on its own; whether the
/// connection was reused, new, or found closed while pooled goes under
/// `http_keepalive/conn`.
pub(super) async fn keepalive(churn: &Churn) -> Option<String> {
    let mut sender = loop {
        match churn.take_pooled() {
            Some(s) if !s.is_closed() => {
                churn.tally.add(CONN, "reused");
                break s;
            }
            Some(_) => churn.tally.add(CONN, "closed while pooled"),
            None => match connect(churn).await {
                Ok(s) => {
                    churn.tally.add(CONN, "opened");
                    break s;
                }
                Err(why) => return Some(why),
            },
        }
    };
    for _ in 0..rand::random_range(1..=4) {
        if sender.ready().await.is_err() {
            churn.tally.add(CONN, "closed before a request");
            return None;
        }
        let body = filler(rand::random_range(16..1024), true);
        let request = http::Request::post(HTTP_PATH)
            .header(http::header::HOST, churn.addr.to_string())
            .body(Full::new(Bytes::from(body.clone())));
        let Ok(request) = request else {
            return Some("bad request built".into());
        };
        let outcome = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await.map(|c| c.to_bytes()) {
                    Ok(got) if status == http::StatusCode::OK && got == body => "status 200".into(),
                    Ok(_) if status == http::StatusCode::OK => "echo mismatch".into(),
                    Ok(_) => format!("status {}", status.as_u16()),
                    Err(_) => "body cut".into(),
                }
            }
            Err(_) => {
                churn.tally.add("http_keepalive", "io error");
                return None;
            }
        };
        churn.tally.add("http_keepalive", &outcome);
    }
    churn.give_back(sender);
    None
}

async fn connect(churn: &Churn) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(churn.addr)
        .await
        .map_err(|_| "connect error".to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake error".to_string())?;
    // Ends when the sender is dropped or the gateway closes the connection.
    tokio::spawn(conn);
    Ok(sender)
}

/// A connection opened and dropped: at once (`idle`), right after a
/// complete request (`unanswered`), or halfway through a body with a reset
/// (`mid_body`).
pub(super) async fn dropped(churn: &Churn, variant: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(churn.addr).await else {
        return "connect error".into();
    };
    let addr = churn.addr;
    let written = match variant {
        "idle" => Ok(()),
        "unanswered" => {
            let head = format!("POST {HTTP_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\n\r\nhello");
            stream.write_all(head.as_bytes()).await
        }
        _ => {
            let head = format!("POST {HTTP_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 4096\r\n\r\n");
            let _ = stream.set_zero_linger();
            match stream.write_all(head.as_bytes()).await {
                Ok(()) => stream.write_all(&filler(100, true)).await,
                Err(e) => Err(e),
            }
        }
    };
    match written {
        Ok(()) => "dropped".into(),
        Err(_) => "refused mid-request".into(),
    }
}

/// A request head dripped one header line every 500 ms, on a fresh
/// connection (`first`) or after one complete request (`second`), until the
/// gateway answers or closes: `status CODE`, `eof`, `reset`, or
/// `not reaped` when it still waits after the header timeout plus 10 s.
pub(super) async fn slowloris(churn: &Churn, variant: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(churn.addr).await else {
        return "connect error".into();
    };
    let addr = churn.addr;
    let mut buf = Vec::new();
    if variant == "second" {
        let request = format!("GET {HTTP_PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return "first request failed".into();
        }
        match read_response(&mut stream, &mut buf).await {
            Some(200) => {}
            Some(code) => return format!("first request got {code}"),
            None => return "first request failed".into(),
        }
    }
    let head = format!("GET {HTTP_PATH} HTTP/1.1\r\nHost: {addr}\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return "refused".into();
    }
    let deadline = tokio::time::Instant::now() + churn.header_timeout + Duration::from_secs(10);
    let mut drip = tokio::time::interval(DRIP);
    drip.tick().await;
    let (mut line, mut chunk) = (0u32, [0u8; 1024]);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return if buf.is_empty() { "reset".into() } else { answer(&buf) };
                }
                Err(_) => return "io error".into(),
            },
            _ = drip.tick() => {
                line += 1;
                // A failed write means the gateway let go; the read says how.
                let _ = stream.write_all(format!("X-Drip-{line}: 1\r\n").as_bytes()).await;
            }
            _ = tokio::time::sleep_until(deadline) => return "not reaped".into(),
        }
    }
    answer(&buf)
}

/// What a slowloris got before the end of the stream.
fn answer(buf: &[u8]) -> String {
    match head_end(buf).and_then(|end| status_of(&buf[..end])) {
        Some(code) => format!("status {code}"),
        None if buf.is_empty() => "eof".into(),
        None => "garbage".into(),
    }
}

/// Reads one response (head, then a `Content-Length` body or a chunked one
/// up to its last chunk) and returns its status; `buf` is left empty.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if buf.len() + n > 64 * 1024 => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = status_of(&buf[..end])?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let complete = |b: &[u8]| match length {
        Some(n) => b.len() >= end + n,
        None => b.ends_with(b"0\r\n\r\n"),
    };
    while !complete(buf) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if buf.len() + n > 64 * 1024 => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.clear();
    Some(status)
}
