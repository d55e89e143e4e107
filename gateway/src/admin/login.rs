//! Dashboard login: the admin token typed once into a form, answered with a
//! session cookie, so that the page's `EventSource` (which cannot set an
//! `Authorization` header) is authenticated without a token in its URL.
//!
//! The cookie holds a random session id (256 bits), never the token. The
//! gateway keeps the ids it issued in memory, each until `admin.session_ttl`
//! passes or `POST /dashboard/logout` ends it; a restart logs everyone out.
//! The cookie is `HttpOnly` (page scripts cannot read it), `SameSite=Strict`
//! (another site's requests do not carry it) and `Path=/`; it is not
//! `Secure` because the admin listener speaks plaintext HTTP. Its name
//! carries the listener's port, since browsers share cookies across the
//! ports of one host and two gateways on one machine must not log each
//! other out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::body::{Body, full};

/// Sessions kept at most; past this the one closest to expiry goes first,
/// so a script hammering the login form cannot grow memory.
const MAX_SESSIONS: usize = 256;

/// Login sessions of the dashboard.
#[derive(Debug)]
pub(super) struct Sessions {
    cookie: String,
    ttl: Duration,
    /// SHA-256 of each live session id → its expiry. A lookup by digest
    /// compares digests, so its timing says nothing about the ids.
    live: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    pub(super) fn new(port: u16, ttl: Duration) -> Self {
        Self {
            cookie: format!("agentmux_admin_{port}"),
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        // A panic elsewhere while holding the lock leaves a map that is
        // still consistent (inserts and removes are single calls).
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns the `Set-Cookie` value that carries it.
    pub(super) fn start(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expiry| *expiry > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(digest(&id), now + self.ttl);
        format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.cookie,
            self.ttl.as_secs()
        )
    }

    /// Whether the request carries the cookie of a live session.
    pub(super) fn is_valid(&self, headers: &HeaderMap) -> bool {
        let Some(id) = self.presented(headers) else {
            return false;
        };
        let now = Instant::now();
        let mut live = self.lock();
        match live.get(&digest(id)) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                live.remove(&digest(id));
                false
            }
            None => false,
        }
    }

    /// Ends the request's session, if any; returns the `Set-Cookie` value
    /// that clears the cookie.
    pub(super) fn end(&self, headers: &HeaderMap) -> String {
        if let Some(id) = self.presented(headers) {
            self.lock().remove(&digest(id));
        }
        format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", self.cookie)
    }

    /// The session id in the request's `Cookie` headers.
    fn presented<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value)
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The `token` field of an `application/x-www-form-urlencoded` body.
pub(super) fn form_token(body: &Bytes) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| percent_decode(v))
}

/// Decodes `+` and `%XX` of a form value; `None` when malformed.
fn percent_decode(v: &str) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// A `303 See Other` to the dashboard, setting `cookie`.
pub(super) fn redirect_to_dashboard(cookie: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The login page; `failed` adds a line saying the last token was wrong
/// (status 401 then, 200 otherwise).
pub(super) fn page(failed: bool) -> Response<Body> {
    let (status, note) = if failed {
        (
            StatusCode::UNAUTHORIZED,
            "<p class=\"bad\">That is not the admin token.</p>",
        )
    } else {
        (StatusCode::OK, "")
    };
    let mut r = Response::new(full(LOGIN_HTML.replace("<!--note-->", note)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Self-contained (no scripts, no other files), so it loads before login.
const LOGIN_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentmux · log in</title>
<link rel="icon" href="data:,">
<style>
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #f6f7f9; color: #1f2933; }
form { max-width: 360px; margin: 15vh auto; background: #fff; border: 1px solid #e4e7ec; border-radius: 6px; padding: 20px; }
h1 { font-size: 16px; margin: 0 0 12px; }
input { width: 100%; box-sizing: border-box; font: inherit; padding: 6px; margin: 4px 0 12px; }
button { font: inherit; padding: 4px 14px; }
.bad { color: #b42318; }
</style>
</head>
<body>
<form method="post" action="/dashboard/login">
<h1>agentmux dashboard</h1>
<!--note-->
<label>Admin token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Log in</button>
</form>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    fn id_of(set_cookie: &str) -> &str {
        set_cookie.split(';').next().unwrap().split_once('=').unwrap().1
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_and_end() {
        let s = Sessions::new(9901, Duration::from_secs(60));
        let set = s.start();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"));
        let id = id_of(&set).to_owned();
        assert_eq!(id.len(), 64);
        let ok = cookie_headers(&format!("other=1; agentmux_admin_9901={id}"));
        assert!(s.is_valid(&ok));
        assert!(!s.is_valid(&cookie_headers(&format!("agentmux_admin_9902={id}"))));
        assert!(!s.is_valid(&cookie_headers("agentmux_admin_9901=00")));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!s.is_valid(&ok), "expired");
        let id = id_of(&s.start()).to_owned();
        let h = cookie_headers(&format!("agentmux_admin_9901={id}"));
        assert!(s.end(&h).contains("Max-Age=0"));
        assert!(!s.is_valid(&h), "logged out");
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_are_bounded() {
        let s = Sessions::new(1, Duration::from_secs(60));
        let first = id_of(&s.start()).to_owned();
        for _ in 0..MAX_SESSIONS {
            tokio::time::advance(Duration::from_millis(1)).await;
            s.start();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert!(!s.is_valid(&cookie_headers(&format!("agentmux_admin_1={first}"))));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_token(&Bytes::from("token=a%2Bb+c&x=1")).as_deref(), Some("a+b c"));
        assert_eq!(form_token(&Bytes::from("x=1")), None);
        assert_eq!(form_token(&Bytes::from("token=%zz")), None);
    }
}
