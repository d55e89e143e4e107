//! The controller task: the one owner of a breaker's state machine.
//!
//! Requests never touch this state. They report outcomes over a bounded
//! channel ([`Event`]) and read the controller's decision from the
//! [`Gate`]; the controller also publishes every state on a `watch`
//! channel. The task ends when the last breaker handle and permit are gone.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::CircuitState;
use super::gate::{Gate, GateWord};
use super::params::BreakerParams;
use super::window::Window;
use crate::FilterMetrics;

/// What a request reports back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Report {
    Success,
    Failure,
    /// A probe permit was dropped without a result.
    ProbeCancelled,
    /// Another gateway instance's circuit for the same target opened: open
    /// too (on this breaker's own timers). Not tied to an epoch.
    Trip,
}

/// One report, tagged with the epoch its permit was issued in: reports from
/// an earlier state (a slow request admitted before the circuit opened) are
/// ignored.
#[derive(Clone, Copy, Debug)]
pub(super) struct Event {
    pub(super) epoch: u64,
    pub(super) probe: bool,
    pub(super) report: Report,
}

/// Who decided to open the circuit: this breaker's own outcomes, or a
/// peer's report (which must not be announced again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opener {
    Local,
    Peer,
}

pub(super) struct Controller {
    params: BreakerParams,
    gate: Arc<Gate>,
    state_tx: watch::Sender<CircuitState>,
    metrics: Arc<dyn FilterMetrics>,
    events: mpsc::Receiver<Event>,
    state: CircuitState,
    epoch: u64,
    consecutive_failures: u32,
    window: Option<Window>,
    /// Opens in a row without closing in between; drives the backoff.
    reopens: u32,
    probe_successes: u32,
    /// Open: when to go half-open. Half-open: when to re-grant probes whose
    /// outcome never arrived.
    deadline: Option<Instant>,
}

impl Controller {
    pub(super) fn new(
        params: BreakerParams,
        gate: Arc<Gate>,
        state_tx: watch::Sender<CircuitState>,
        metrics: Arc<dyn FilterMetrics>,
        events: mpsc::Receiver<Event>,
    ) -> Self {
        let now = Instant::now();
        let window = params.failure_rate.map(|r| Window::new(r.window, now));
        Self {
            params,
            gate,
            state_tx,
            metrics,
            events,
            state: CircuitState::Closed,
            epoch: 0,
            consecutive_failures: 0,
            window,
            reopens: 0,
            probe_successes: 0,
            deadline: None,
        }
    }

    pub(super) async fn run(mut self) {
        self.metrics.circuit_state(CircuitState::Closed);
        loop {
            let event = match self.deadline {
                Some(at) => tokio::select! {
                    event = self.events.recv() => event,
                    () = tokio::time::sleep_until(at) => {
                        self.on_deadline();
                        continue;
                    }
                },
                None => self.events.recv().await,
            };
            match event {
                Some(event) => self.on_event(event),
                // Every handle and permit is gone: nobody can ask anymore.
                None => return,
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        if event.report == Report::Trip {
            // Already open: keep the running timer rather than extend it.
            if self.state != CircuitState::Open {
                self.open(Opener::Peer);
            }
            return;
        }
        if event.epoch != self.epoch {
            return;
        }
        match (self.state, event.probe, event.report) {
            (CircuitState::Closed, false, Report::Success) => {
                self.consecutive_failures = 0;
                self.record_in_window(false);
            }
            (CircuitState::Closed, false, Report::Failure) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.record_in_window(true);
                if self.should_open() {
                    self.open(Opener::Local);
                }
            }
            (CircuitState::HalfOpen, true, Report::Success) => {
                self.probe_successes += 1;
                if self.probe_successes >= self.params.half_open_probes {
                    self.close();
                }
            }
            (CircuitState::HalfOpen, true, Report::Failure) => self.open(Opener::Local),
            (CircuitState::HalfOpen, true, Report::ProbeCancelled) => {
                self.gate.return_probes(self.epoch, 1);
            }
            _ => {}
        }
    }

    fn on_deadline(&mut self) {
        match self.state {
            CircuitState::Open => self.half_open(),
            CircuitState::HalfOpen => {
                // Probe outcomes went missing (dropped on a full channel, or
                // the probes are very slow): hand the slots out again rather
                // than stay half-open forever.
                let missing = self.params.half_open_probes - self.probe_successes;
                self.publish(self.gate_word(missing));
                self.deadline = Some(Instant::now() + self.params.open_duration);
            }
            CircuitState::Closed => self.deadline = None,
        }
    }

    fn record_in_window(&mut self, failed: bool) {
        if let Some(window) = &mut self.window {
            window.record(Instant::now(), failed);
        }
    }

    fn should_open(&mut self) -> bool {
        if self.consecutive_failures >= self.params.consecutive_failures {
            return true;
        }
        let (Some(window), Some(rate)) = (&mut self.window, self.params.failure_rate) else {
            return false;
        };
        let (total, failures) = window.totals(Instant::now());
        total >= rate.min_requests && f64::from(failures) >= rate.rate * f64::from(total)
    }

    fn open(&mut self, by: Opener) {
        // A failed probe reopens for longer; opening from closed starts over.
        if self.state == CircuitState::HalfOpen {
            self.reopens = self.reopens.saturating_add(1);
        } else {
            self.reopens = 0;
        }
        let duration = open_duration(&self.params, self.reopens, &mut rand::rng());
        self.transition(CircuitState::Open, 0);
        self.deadline = Some(Instant::now() + duration);
        match by {
            Opener::Local => self.metrics.circuit_opened(),
            Opener::Peer => self.metrics.circuit_opened_by_peer(),
        }
    }

    fn half_open(&mut self) {
        self.probe_successes = 0;
        self.transition(CircuitState::HalfOpen, self.params.half_open_probes);
        self.deadline = Some(Instant::now() + self.params.open_duration);
    }

    fn close(&mut self) {
        self.consecutive_failures = 0;
        self.reopens = 0;
        if let Some(window) = &mut self.window {
            window.reset(Instant::now());
        }
        self.transition(CircuitState::Closed, 0);
        self.deadline = None;
    }

    fn transition(&mut self, state: CircuitState, probes: u32) {
        self.state = state;
        self.epoch += 1;
        self.publish(self.gate_word(probes));
        self.state_tx.send_replace(state);
        self.metrics.circuit_state(state);
    }

    fn gate_word(&self, probes: u32) -> GateWord {
        GateWord {
            state: self.state,
            probes,
            epoch: self.epoch,
        }
    }

    fn publish(&self, word: GateWord) {
        self.gate.publish(word);
    }
}

/// How long the circuit stays open after `reopens` failed probes in a row:
/// `open_duration · 2^reopens`, capped at `max_open_duration`, then jittered
/// down by up to a quarter so that gateways (and endpoints) that opened
/// together do not all probe at the same instant. Never longer than
/// configured.
pub(super) fn open_duration(params: &BreakerParams, reopens: u32, rng: &mut impl Rng) -> Duration {
    let factor = 2u32.saturating_pow(reopens.min(31));
    let ceiling = params
        .open_duration
        .checked_mul(factor)
        .unwrap_or(params.max_open_duration)
        .min(params.max_open_duration);
    ceiling.mul_f64(1.0 - 0.25 * rng.random::<f64>())
}
