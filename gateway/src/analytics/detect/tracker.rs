//! The per-scope, per-kind state machine between a detector's verdict and
//! an alert: minimum duration before raising, hysteresis and hold-down
//! before clearing, and an optional "accept as the new normal".
//!
//! ```text
//! Quiet ──raise level──▶ Pending ──held min_duration──▶ Firing
//!   ▲                      │ normal                        │ normal for hold_down
//!   └──────────────────────┘◀──────────────────────────────┘ (or rebaselined)
//! ```
//! While firing, the *elevated* band (between the clear and raise
//! thresholds) keeps the alert open: the series must come all the way back
//! under the clear threshold, and stay there, before the alert clears.

use crate::analytics::alert::Severity;

/// A detector's verdict for one second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Under the clear threshold (or too little data to judge).
    Normal,
    /// Between the clear and the raise thresholds.
    Elevated,
    /// Over the raise threshold.
    Raise(Severity),
}

/// What the tracker decided this second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to tell the alert book.
    Hold,
    /// Raise (or escalate to) this severity.
    Raise(Severity),
    /// Clear: the series recovered.
    Clear,
    /// Clear: the shift lasted long enough to be the new normal.
    Rebase,
}

/// Timing rules of one alert kind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Seconds the raise level must persist before raising.
    pub(crate) min_duration: u32,
    /// Seconds the normal level must persist before clearing.
    pub(crate) hold_down: u32,
    /// Seconds of firing after which the shift becomes the baseline.
    pub(crate) rebase_after: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Quiet,
    Pending {
        since: u32,
        severity: Severity,
    },
    Firing {
        since: u32,
        severity: Severity,
        calm_since: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Tracker {
    phase: Phase,
}

impl Default for Tracker {
    fn default() -> Self {
        Self { phase: Phase::Quiet }
    }
}

impl Tracker {
    /// True while nothing is pending or firing: baselines learn only then,
    /// so an anomaly never teaches the detector that it is normal.
    pub(crate) fn is_quiet(&self) -> bool {
        self.phase == Phase::Quiet
    }

    pub(crate) fn step(&mut self, now: u32, level: Level, t: Timing) -> Step {
        match (self.phase, level) {
            (Phase::Quiet, Level::Raise(severity)) => {
                self.phase = Phase::Pending { since: now, severity };
                self.try_fire(now, level, t)
            }
            (Phase::Quiet, _) => Step::Hold,
            (Phase::Pending { .. }, Level::Normal) => {
                self.phase = Phase::Quiet;
                Step::Hold
            }
            (Phase::Pending { .. }, _) => self.try_fire(now, level, t),
            (Phase::Firing { .. }, _) => self.firing(now, level, t),
        }
    }

    fn try_fire(&mut self, now: u32, level: Level, t: Timing) -> Step {
        let Phase::Pending { since, severity } = self.phase else {
            return Step::Hold;
        };
        let severity = match level {
            Level::Raise(s) => s.max(severity),
            _ => severity,
        };
        self.phase = Phase::Pending { since, severity };
        // Fire only on a second that is itself over the raise threshold,
        // once the condition has lasted long enough.
        if matches!(level, Level::Raise(_)) && now.saturating_sub(since) + 1 >= t.min_duration {
            self.phase = Phase::Firing {
                since: now,
                severity,
                calm_since: None,
            };
            return Step::Raise(severity);
        }
        Step::Hold
    }

    fn firing(&mut self, now: u32, level: Level, t: Timing) -> Step {
        let Phase::Firing {
            since,
            severity,
            calm_since,
        } = self.phase
        else {
            return Step::Hold;
        };
        if t.rebase_after.is_some_and(|r| now.saturating_sub(since) >= r) {
            self.phase = Phase::Quiet;
            return Step::Rebase;
        }
        match level {
            Level::Raise(s) => {
                self.phase = Phase::Firing {
                    since,
                    severity: s.max(severity),
                    calm_since: None,
                };
                if s > severity { Step::Raise(s) } else { Step::Hold }
            }
            Level::Elevated => {
                self.phase = Phase::Firing {
                    since,
                    severity,
                    calm_since: None,
                };
                Step::Hold
            }
            Level::Normal => {
                let calm = calm_since.unwrap_or(now);
                if now.saturating_sub(calm) + 1 >= t.hold_down {
                    self.phase = Phase::Quiet;
                    return Step::Clear;
                }
                self.phase = Phase::Firing {
                    since,
                    severity,
                    calm_since: Some(calm),
                };
                Step::Hold
            }
        }
    }
}
