//! Capacity beyond one process's open files: `compare` holds up to
//! `--sessions-per-process` sessions itself and, above that, splits the
//! capacity phase over several `agentmux-bench hold` child processes, each
//! with its own open-file limit (a gateway in mux mode holds about as
//! many agents as it has descriptors, so one generator process with the
//! same limit could never find where it stops).
//!
//! A child opens its share, prints one JSON line (`held`, `failed`,
//! `first_error`) and keeps the sessions open until its stdin closes, so
//! the shares are all held at the same time when the parent adds them up.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::idle;
use crate::cli::HoldArgs;
use crate::error::Error;
use crate::load::Target;
use crate::tls::{self, Trust};

/// Failures after which a process stops trying (a full proxy refuses every
/// further attempt; thousands of refusals add nothing).
pub(crate) const GIVE_UP: u64 = 200;

/// How long one child may take to open its share (each attempt times out
/// after 5 s, 64 at a time, so a share of 15,000 fits many times over).
const SHARE_DEADLINE: Duration = Duration::from_secs(600);

/// What a child reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Share {
    pub(crate) held: u64,
    pub(crate) failed: u64,
    pub(crate) first_error: Option<String>,
}

/// `agentmux-bench hold` entry point (a child of `compare`).
pub(crate) async fn main(args: HoldArgs) -> Result<ExitCode, Error> {
    let ca = args.ca.clone();
    let trust = || match &ca {
        Some(path) => tls::client_config(Trust::CaFile(path)),
        None => Err(Error::Usage("plaintext target needs no TLS".into())),
    };
    let target = Target::resolve(&args.url, trust).await?;
    let held = idle::hold(&target, args.sessions, 64, GIVE_UP, Duration::from_secs(5)).await;
    let share = Share {
        held: held.open(),
        failed: held.failed,
        first_error: held.first_error.clone(),
    };
    let line = serde_json::to_string(&share).map_err(|e| Error::Runtime(e.to_string()))?;
    println!("{line}");
    // Hold until the parent closes our stdin (or exits).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop(held);
    Ok(ExitCode::SUCCESS)
}

/// Holds `count` sessions at `url` from `processes` children at once and
/// adds up what they held; the children are stopped before returning.
pub(crate) async fn across_processes(url: &str, ca: Option<&Path>, count: u64, processes: u64) -> Share {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return Share {
                failed: count,
                first_error: Some(format!("finding this executable: {e}")),
                ..Share::default()
            };
        }
    };
    let per = count.div_ceil(processes.max(1));
    let mut children = Vec::new();
    let mut total = Share::default();
    let mut left = count;
    while left > 0 {
        let share = per.min(left);
        left -= share;
        match spawn(&exe, url, ca, share) {
            Ok(child) => children.push(child),
            Err(e) => {
                total.failed += share;
                total.first_error.get_or_insert(format!("starting a hold process: {e}"));
            }
        }
    }
    // The children open their shares concurrently; read each one's report.
    for child in &mut children {
        let report = match child.stdout.take() {
            Some(out) => {
                let mut lines = BufReader::new(out).lines();
                tokio::time::timeout(SHARE_DEADLINE, lines.next_line()).await
            }
            None => Ok(Ok(None)),
        };
        match report {
            Ok(Ok(Some(line))) => match serde_json::from_str::<Share>(&line) {
                Ok(s) => {
                    total.held += s.held;
                    total.failed += s.failed;
                    if total.first_error.is_none() {
                        total.first_error = s.first_error;
                    }
                }
                Err(e) => {
                    total
                        .first_error
                        .get_or_insert(format!("hold process report `{line}`: {e}"));
                }
            },
            _ => {
                total.first_error.get_or_insert("a hold process did not report".into());
            }
        }
    }
    for mut child in children {
        // Closing stdin ends it; kill it if it does not end soon.
        drop(child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    total
}

fn spawn(exe: &Path, url: &str, ca: Option<&Path>, sessions: u64) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("hold").arg(url).arg("--sessions").arg(sessions.to_string());
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
}
