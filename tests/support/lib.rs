//! Support for the end-to-end tests: runs the real `agentmux` binary on
//! loopback ports it picks itself, and gives tests real clients (hyper over
//! rustls for HTTP/1.1 and HTTP/2, tokio-tungstenite for WebSocket) and
//! small upstream servers.
//!
//! The binary is built once per test process with `cargo build` (a no-op
//! when it is up to date), so `cargo test --workspace` always exercises the
//! current code without a separate build step.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

pub mod browser;
pub mod client;
pub mod mux;
pub mod redis;
pub mod upstream;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Path to the `agentmux` binary of the current build profile, built on
/// first use.
pub fn gateway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>/agentmux
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "agentmux", "--bin", "agentmux"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the agentmux binary");
        assert!(status.success(), "cargo build of agentmux failed");
        profile_dir.join("agentmux")
    })
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agentmux-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub dir: TempDir,
    /// Bound listener addresses by listener name.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    /// Every stdout line, in order (status lines).
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every stderr line (the logs), when started with
    /// [`Gateway::start_capturing_logs`]; else stderr is the test's.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The standard TLS listener block tests use: dev certificates generated
/// in the test's directory.
pub const TLS: &str =
    r#"tls = { cert = "certs/dev/server.crt", key = "certs/dev/server.key", generate_dev_certs = true }"#;

impl Gateway {
    /// Starts the binary with `config` (TOML; use port 0 everywhere) in a
    /// fresh directory and waits until it prints `ready`.
    pub fn start(config: &str) -> Self {
        Self::start_in(TempDir::new("gw"), config)
    }

    pub fn start_in(dir: TempDir, config: &str) -> Self {
        Self::spawn_with(dir, config, None, None)
    }

    /// Like [`start`](Self::start), keeping every log line in `stderr`
    /// (at `log` level) for the test to read.
    pub fn start_capturing_logs(config: &str, log: &str) -> Self {
        Self::spawn_with(TempDir::new("gw"), config, None, Some(log))
    }

    /// Like [`start`](Self::start), with the process limited to `nofile`
    /// open files (soft and hard, so the gateway cannot raise it).
    pub fn start_with_fd_limit(config: &str, nofile: u64) -> Self {
        Self::spawn_with(TempDir::new("gw"), config, Some(nofile), None)
    }

    fn spawn_with(dir: TempDir, config: &str, nofile: Option<u64>, capture_log: Option<&str>) -> Self {
        let config = if config.contains("[admin]") {
            config.to_owned()
        } else {
            format!("[admin]\nlisten = \"127.0.0.1:0\"\n{config}")
        };
        let path = dir.write("gateway.toml", &config);
        let mut cmd = match nofile {
            None => Command::new(gateway_bin()),
            Some(n) => {
                // `exec` keeps the pid, so signals still reach the gateway.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(gateway_bin());
                c
            }
        };
        let mut child = cmd
            .arg("run")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .env(
                "RUST_LOG",
                capture_log.map_or_else(
                    || std::env::var("AGENTMUX_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                    str::to_owned,
                ),
            )
            .stdout(Stdio::piped())
            .stderr(if capture_log.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn agentmux");
        let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let lines = stderr_lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut listeners = Vec::new();
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("gateway did not become ready; stdout: {:?}", lines.lock().unwrap());
                }
            };
            if let Some(rest) = line.strip_prefix("listener ") {
                // "listener NAME on SCHEME://ADDR"
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_owned();
                let url = parts.nth(1).unwrap();
                let addr = url.split("://").nth(1).unwrap().parse().unwrap();
                listeners.push((name, addr));
            } else if let Some(url) = line.strip_prefix("admin on http://") {
                admin = Some(url.parse().unwrap());
            } else if line == "ready" {
                break;
            }
        }
        Self {
            child: Some(child),
            dir,
            listeners,
            admin: admin.expect("admin address line"),
            stdout: lines,
            stderr: stderr_lines,
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// The development CA the gateway generated (TLS listeners).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/dev/ca.crt")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (e.g. "TERM") to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin listener; returns status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = client::get_plain(self.admin, path, &[]).await;
        (r.status, r.text())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`
/// (a generous bound that only a broken feature reaches).
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
