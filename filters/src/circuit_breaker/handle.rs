//! The breaker handle the request path (and the WebSocket connect path)
//! uses: check the gate, get a permit, report the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

use super::controller::{Controller, Event, Report};
use super::gate::{Admission, Gate};
use super::{BreakerParams, CircuitOpen, CircuitState};
use crate::FilterMetrics;

/// What happened to a request that passed the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered well.
    Success,
    /// The upstream failed (error, or a failure status).
    Failure,
}

/// A handle to one circuit breaker (one per cluster, one per endpoint).
/// Cheap to clone; clones share the breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    gate: Arc<Gate>,
    events: mpsc::Sender<Event>,
    state_rx: watch::Receiver<CircuitState>,
    dropped: AtomicU64,
    metrics: Arc<dyn FilterMetrics>,
}

impl CircuitBreaker {
    /// A closed breaker; spawns its controller task on the current Tokio
    /// runtime. The task ends when the last handle and permit are dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like `tokio::spawn` (breakers are built
    /// while the gateway loads its config, inside the runtime).
    pub fn new(params: BreakerParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        let gate = Arc::new(Gate::new());
        let (events_tx, events_rx) = mpsc::channel(params.outcome_queue);
        let (state_tx, state_rx) = watch::channel(CircuitState::Closed);
        let controller = Controller::new(params, gate.clone(), state_tx, metrics.clone(), events_rx);
        tokio::spawn(controller.run());
        Self {
            shared: Arc::new(Shared {
                gate,
                events: events_tx,
                state_rx,
                dropped: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Asks to send one request: a [`Permit`] to report its outcome with, or
    /// [`CircuitOpen`] to fail fast. Never blocks.
    pub fn check(&self) -> Result<Permit, CircuitOpen> {
        let (epoch, probe) = match self.shared.gate.admit() {
            Admission::Pass { epoch } => (epoch, false),
            Admission::Probe { epoch } => (epoch, true),
            Admission::Refused { state } => {
                self.shared.metrics.circuit_rejected();
                return Err(CircuitOpen::new(state));
            }
        };
        Ok(Permit {
            shared: self.shared.clone(),
            epoch,
            probe,
            reported: false,
        })
    }

    /// The state the controller last published.
    pub fn state(&self) -> CircuitState {
        self.shared.gate.load().state
    }

    /// A receiver that sees every state change (for the admin API and the
    /// dashboard).
    pub fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.shared.state_rx.clone()
    }

    /// Opens the circuit because the same target's circuit opened on
    /// another gateway instance, so that all instances back off together.
    /// The open duration, backoff and jitter are this breaker's own; an
    /// open circuit is left as it is (its timer is not extended); a
    /// half-open one reopens as after a failed probe. Reported through
    /// [`crate::FilterMetrics::circuit_opened_by_peer`], not
    /// `circuit_opened`, so a gateway that announces local opens does not
    /// echo this one. Never blocks: dropped (and counted) when the
    /// controller's channel is full.
    pub fn trip(&self) {
        let event = Event {
            epoch: 0,
            probe: false,
            report: Report::Trip,
        };
        if self.shared.events.try_send(event).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.circuit_outcome_dropped();
        }
    }

    /// How many outcomes were dropped because the controller's channel was
    /// full.
    pub fn dropped_outcomes(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Leave to send one request through the breaker. Report what happened
/// with [`Permit::record`].
///
/// A permit dropped without a record (the agent went away, the future was
/// cancelled) counts as **neither** success nor failure: a cancellation
/// says nothing about the upstream, and counting it either way would let
/// impatient agents open or close the circuit. A dropped *probe* gives its
/// half-open slot back so another request can probe.
#[derive(Debug)]
#[must_use = "report the outcome with `Permit::record`"]
pub struct Permit {
    shared: Arc<Shared>,
    epoch: u64,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// Reports the request's outcome to the breaker. Never blocks: if the
    /// controller's channel is full the outcome is dropped and counted.
    pub fn record(mut self, outcome: Outcome) {
        self.reported = true;
        let report = match outcome {
            Outcome::Success => Report::Success,
            Outcome::Failure => Report::Failure,
        };
        self.send(report);
    }

    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    fn send(&self, report: Report) {
        let event = Event {
            epoch: self.epoch,
            probe: self.probe,
            report,
        };
        if self.shared.events.try_send(event).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.circuit_outcome_dropped();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Ordinary cancelled requests are not reported at all (see above);
        // only a probe's slot must be returned.
        if !self.reported && self.probe {
            self.send(Report::ProbeCancelled);
        }
    }
}
