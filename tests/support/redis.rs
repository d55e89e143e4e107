//! A real `redis-server` for the scale-out tests, on a free loopback port,
//! started and stopped by the test itself (never a system service).
//!
//! Redis comes from Debian (`apt-get install redis-server`; `.ci/run`
//! installs it). Where it is missing the tests that need it say so and
//! skip, unless `AGENTMUX_REQUIRE_TOOLS=1` makes that a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;
use super::browser::tools_required;

/// A `redis-server` process of the test's own.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Redis {
    /// Starts a server on a free port; `None` when `redis-server` is not
    /// installed (and not required).
    pub fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                !tools_required(),
                "redis-server is required (apt-get install redis-server)"
            );
            eprintln!("redis-server not installed; skipping");
            return None;
        }
        let port = super::upstream::closed_port().port();
        let mut redis = Self {
            child: None,
            port,
            dir: TempDir::new("redis"),
        };
        redis.spawn();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL, by its pid): clients see their
    /// connections reset, as when a Redis host dies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command over RESP and returns the reply as text (bulk and
    /// simple strings as they are, integers in decimal, arrays one element
    /// per line, nil as an empty string).
    pub fn command(&self, args: &[&str]) -> String {
        let mut tcp = TcpStream::connect(self.addr()).expect("connect to redis");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        tcp.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(tcp);
        read_reply(&mut r)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut tcp) = TcpStream::connect(self.addr()) {
                tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut buf = [0u8; 7];
                if tcp.write_all(b"PING\r\n").is_ok() && tcp.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => rest.to_owned(),
        "-" => format!("ERR {rest}"),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return String::new();
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n as usize]).into_owned()
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            (0..n.max(0)).map(|_| read_reply(r)).collect::<Vec<_>>().join("\n")
        }
        other => panic!("unexpected RESP reply type {other:?}"),
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
