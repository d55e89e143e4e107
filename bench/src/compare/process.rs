//! Running a proxy under test: spawn it pinned to one core (`taskset`),
//! logs to a file, wait until its port accepts, and stop it with SIGTERM
//! then SIGKILL (through the `kill` command: the bench forbids unsafe code
//! and so calls no libc).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::procstat;

/// How to start one proxy.
pub(crate) struct Launch {
    /// Program to run.
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Where it will listen once ready.
    pub(crate) listen: SocketAddr,
    /// Log file for its stdout and stderr.
    pub(crate) log: PathBuf,
}

/// A running proxy.
pub(crate) struct Running {
    child: Child,
    /// Its pid (the root of its process tree).
    pub(crate) pid: u32,
}

/// Whether `taskset` can be used.
pub(crate) fn have_taskset() -> bool {
    find_program(Path::new("taskset")).is_some()
}

/// Resolves a program name on PATH (or checks a path).
pub(crate) fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// Starts `launch`, pinned to `cores` when given; waits up to 10 s for its port.
pub(crate) async fn start(launch: &Launch, cores: Option<&str>) -> Result<Running, String> {
    let log = std::fs::File::create(&launch.log).map_err(|e| format!("{}: {e}", launch.log.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = match cores {
        Some(cores) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cores).arg(&launch.program);
            c
        }
        None => Command::new(&launch.program),
    };
    command
        .args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
    let pid = child.id().ok_or("exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = log_tail(&launch.log);
            return Err(format!(
                "exited with {status} before listening on {}{tail}",
                launch.listen
            ));
        }
        if tokio::net::TcpStream::connect(launch.listen).await.is_ok() {
            return Ok(Running { child, pid });
        }
        if Instant::now() > deadline {
            let mut running = Running { child, pid };
            running.stop().await;
            return Err(format!(
                "not listening on {} after 10 s{}",
                launch.listen,
                log_tail(&launch.log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Running {
    /// The process tree (for CPU and memory).
    pub(crate) fn pids(&self) -> Vec<u32> {
        procstat::tree(self.pid)
    }

    /// Asks the proxy to stop, then kills its whole tree after 3 s.
    pub(crate) async fn stop(&mut self) {
        let tree = self.pids();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        // Leftover workers (e.g. an nginx worker whose master was killed).
        for pid in tree.iter().skip(1) {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status().await;
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        String::new()
    } else {
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!(": {}", tail.join(" | "))
    }
}
