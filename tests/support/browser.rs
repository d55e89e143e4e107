//! Headless Chromium driven over the DevTools protocol (a WebSocket), for
//! end-to-end tests of the dashboard page and of what a browser's own
//! WebSocket client does through the gateway.
//!
//! Chromium comes from Debian (`apt-get install chromium`; `.ci/run`
//! installs it). Where it is missing the tests that need it say so and
//! skip, unless `AGENTMUX_REQUIRE_TOOLS=1` (set by `.ci/run`) makes that a
//! failure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TempDir;

/// Whether a missing tool must fail the test instead of skipping it.
pub fn tools_required() -> bool {
    std::env::var("AGENTMUX_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// A headless Chromium showing one page.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
    _profile: TempDir,
}

impl Browser {
    /// Opens `url`; `None` when Chromium is not installed (and not required).
    pub async fn open(url: &str) -> Option<Self> {
        Self::open_with(url, &[]).await
    }

    /// Opens `url` with extra command-line flags.
    pub async fn open_with(url: &str, flags: &[&str]) -> Option<Self> {
        let exe = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let Some(exe) = exe else {
            assert!(!tools_required(), "chromium is required (apt-get install chromium)");
            eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
            return None;
        };
        let profile = TempDir::new("chromium");
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1300",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(flags)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium DevTools endpoint");
        let port = browser_ws
            .split(':')
            .nth(2)
            .and_then(|p| p.split('/').next())
            .unwrap()
            .to_owned();
        let page_ws = page_target(&port).await;
        let (ws, _) = tokio_tungstenite::connect_async(page_ws)
            .await
            .expect("DevTools page socket");
        Some(Self {
            child,
            ws,
            next: 0,
            _profile: profile,
        })
    }

    /// Sends one DevTools command and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("DevTools answer")
                .unwrap()
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true }))
            .await;
        r["result"]["value"].clone()
    }

    /// Logs in on the dashboard's login page (the page `open` showed) with
    /// `token`, as a person would: types it and submits the form, so the
    /// browser sends its own `Origin` / `Sec-Fetch-Site` and keeps the
    /// session cookie. Returns once the dashboard itself has loaded.
    pub async fn log_in(&mut self, token: &str) {
        for _ in 0..150 {
            if self.eval("!!document.querySelector('input[name=token]')").await == json!(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let submit = format!(
            "document.querySelector('input[name=token]').value = {}; document.querySelector('form').submit(); true",
            json!(token)
        );
        assert_eq!(self.eval(&submit).await, json!(true), "no login form on the page");
        for _ in 0..150 {
            if self.eval("!!document.getElementById('tiles')").await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the dashboard did not load after logging in");
    }

    /// Saves a PNG screenshot of the page.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools WebSocket URL of the first page target.
async fn page_target(port: &str) -> String {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        let r = super::client::get_plain(addr, "/json/list", &[]).await;
        // Chromium builds the URL from the request's Host header; build it
        // from the id instead, on the address it listens on.
        if let Some(id) = r
            .json()
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["id"].as_str())
        {
            return format!("ws://127.0.0.1:{port}/devtools/page/{id}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no page target in chromium");
}
