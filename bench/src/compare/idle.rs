//! Holding many idle sessions open through a target: for memory per idle
//! session (RSS delta / sessions) and for capacity (how many sessions a
//! proxy holds before it refuses more, e.g. at its open-file limit).

use std::time::Duration;

use futures_util::StreamExt;

use crate::load::Target;
use crate::load::ws::{self, Ws};
use crate::report::Recorder;

/// Idle sessions held open; dropping it closes them.
pub(crate) struct Held {
    #[allow(dead_code)] // held only to keep the sockets open
    sessions: Vec<Ws>,
    /// Sessions that failed to open.
    pub(crate) failed: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
}

impl Held {
    /// Sessions open.
    pub(crate) fn open(&self) -> u64 {
        self.sessions.len() as u64
    }
}

/// Opens up to `count` WebSocket sessions, `concurrency` at a time. Stops
/// early after `give_up` failures (a full proxy answers every further
/// attempt with an error, which need not be repeated thousands of times).
pub(crate) async fn hold(target: &Target, count: u64, concurrency: usize, give_up: u64, timeout: Duration) -> Held {
    let rec = match Recorder::new() {
        Ok(r) => r,
        Err(e) => {
            return Held {
                sessions: Vec::new(),
                failed: count,
                first_error: Some(e.to_string()),
            };
        }
    };
    let mut held = Held {
        sessions: Vec::with_capacity(count as usize),
        failed: 0,
        first_error: None,
    };
    let mut attempts = futures_util::stream::iter(0..count)
        .map(|_| ws::open(target, &[], &rec, timeout))
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = attempts.next().await {
        match result {
            Ok(ws) => held.sessions.push(ws),
            Err(e) => {
                held.failed += 1;
                held.first_error
                    .get_or_insert_with(|| format!("{:?}: {}", e.kind, e.detail));
                if held.failed >= give_up {
                    break;
                }
            }
        }
    }
    held
}
