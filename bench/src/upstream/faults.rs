//! Fault injection for the simulator. Each message (WebSocket frame, HTTP
//! request, SSE token) rolls once: drop the connection, fail it, or pass;
//! a passing reply may then get one byte flipped. Connection-wide drops at
//! a time or interval go through a generation counter every connection
//! watches.

use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::cli::UpstreamArgs;
use crate::error::Error;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer normally.
    Pass,
    /// Answer with an error (HTTP 500, WebSocket close 1011).
    Error,
    /// Drop the connection without answering.
    Drop,
}

/// Fault settings, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub(crate) error_rate: f64,
    pub(crate) corrupt_rate: f64,
    pub(crate) drop_rate: f64,
    pub(crate) latency: Duration,
    pub(crate) drop_at: Option<Duration>,
    pub(crate) drop_every: Option<Duration>,
}

impl Faults {
    /// Reads and checks the fault flags.
    pub(crate) fn from_args(args: &UpstreamArgs) -> Result<Self, Error> {
        for (flag, p) in [
            ("--error-rate", args.error_rate),
            ("--corrupt-rate", args.corrupt_rate),
            ("--drop-rate", args.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Usage(format!("{flag} must be between 0 and 1, got {p}")));
            }
        }
        if args.drop_every.is_some_and(|d| d.is_zero()) {
            return Err(Error::Usage("--drop-every must be more than 0".into()));
        }
        Ok(Self {
            error_rate: args.error_rate,
            corrupt_rate: args.corrupt_rate,
            drop_rate: args.drop_rate,
            latency: args.latency,
            drop_at: args.drop_at,
            drop_every: args.drop_every,
        })
    }

    /// Rolls the dice for one message.
    pub(crate) fn roll(&self) -> Verdict {
        if self.drop_rate > 0.0 && rand::random::<f64>() < self.drop_rate {
            Verdict::Drop
        } else if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            Verdict::Error
        } else {
            Verdict::Pass
        }
    }

    /// Maybe flips the low bit of one byte (ASCII stays ASCII, so text
    /// frames stay valid UTF-8 and the corruption reaches the checker).
    pub(crate) fn maybe_corrupt(&self, bytes: &mut [u8]) -> bool {
        if self.corrupt_rate <= 0.0 || bytes.is_empty() || rand::random::<f64>() >= self.corrupt_rate {
            return false;
        }
        let at = rand::rng().random_range(0..bytes.len());
        bytes[at] ^= 1;
        true
    }

    /// Starts the timer that drops every connection at `drop_at` and then
    /// every `drop_every`; connections watch the returned receiver.
    pub(crate) fn start_drops(&self) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        let (first, every) = match (self.drop_at, self.drop_every) {
            (None, None) => return rx,
            (Some(at), every) => (at, every),
            (None, Some(every)) => (every, Some(every)),
        };
        tokio::spawn(async move {
            tokio::time::sleep(first).await;
            loop {
                tx.send_modify(|generation| *generation += 1);
                match every {
                    Some(every) => tokio::time::sleep(every).await,
                    None => {
                        // Keep the sender alive: a dropped sender would
                        // look like a drop signal to every watcher.
                        tx.closed().await;
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// Resolves when the drop generation changes (never, if drops are off).
pub(crate) async fn dropped(kill: &mut watch::Receiver<u64>) {
    if kill.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_zero_and_one_are_exact() {
        let never = Faults::default();
        let always = Faults {
            error_rate: 1.0,
            corrupt_rate: 1.0,
            ..Faults::default()
        };
        let mut bytes = [0u8; 8];
        for _ in 0..100 {
            assert_eq!(never.roll(), Verdict::Pass);
            assert!(!never.maybe_corrupt(&mut bytes));
            assert_eq!(always.roll(), Verdict::Error);
        }
        assert!(always.maybe_corrupt(&mut bytes));
        assert_eq!(bytes.iter().filter(|b| **b != 0).count(), 1);
    }
}
