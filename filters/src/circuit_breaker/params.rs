//! Parameters of a circuit breaker.

use std::time::Duration;

use crate::InvalidParam;
use crate::params::nonzero_duration;

/// The largest `half_open_probes` accepted (it must fit the gate word).
const MAX_PROBES: u32 = 1000;

/// Validated circuit-breaker parameters.
///
/// Built from [`BreakerParams::new`] (or [`Default`]) and refined with the
/// `with_*` methods, each of which validates its own arguments:
///
/// ```
/// # use std::time::Duration;
/// # use agentmux_filters::circuit_breaker::BreakerParams;
/// let params = BreakerParams::new(5, Duration::from_secs(5))?
///     .with_failure_rate(0.5, Duration::from_secs(10), 20)?
///     .with_max_open_duration(Duration::from_secs(60))?
///     .with_half_open_probes(2)?;
/// # Ok::<_, agentmux_filters::InvalidParam>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerParams {
    pub(super) consecutive_failures: u32,
    pub(super) failure_rate: Option<FailureRate>,
    pub(super) open_duration: Duration,
    pub(super) max_open_duration: Duration,
    pub(super) half_open_probes: u32,
    pub(super) outcome_queue: usize,
}

/// Open when at least `rate` of the requests in the last `window` failed,
/// once the window holds `min_requests` requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct FailureRate {
    pub(super) rate: f64,
    pub(super) window: Duration,
    pub(super) min_requests: u32,
}

impl Default for BreakerParams {
    /// 5 consecutive failures, or ≥ 50% failures over 10 s with at least 20
    /// requests; open 5 s, growing to at most 60 s; 1 half-open probe;
    /// 1024 queued outcomes.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Some(FailureRate {
                rate: 0.5,
                window: Duration::from_secs(10),
                min_requests: 20,
            }),
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            half_open_probes: 1,
            outcome_queue: 1024,
        }
    }
}

impl BreakerParams {
    /// Open after `consecutive_failures` (>= 1) failures in a row and stay
    /// open for `open_duration` (> 0) before probing. Other settings keep
    /// their defaults; the cap on the open duration is raised to
    /// `open_duration` if the default cap is shorter.
    pub fn new(consecutive_failures: u32, open_duration: Duration) -> Result<Self, InvalidParam> {
        if consecutive_failures == 0 {
            return Err(InvalidParam::new("consecutive_failures", "must be >= 1 (got 0)"));
        }
        let open_duration = nonzero_duration("open_duration", open_duration)?;
        let defaults = Self::default();
        Ok(Self {
            consecutive_failures,
            open_duration,
            max_open_duration: defaults.max_open_duration.max(open_duration),
            ..defaults
        })
    }

    /// Also open when the failure rate over the sliding `window` reaches
    /// `rate` (in `0.0 < rate <= 1.0`), once the window holds at least
    /// `min_requests` (>= 1) requests.
    pub fn with_failure_rate(mut self, rate: f64, window: Duration, min_requests: u32) -> Result<Self, InvalidParam> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(InvalidParam::new(
                "failure_rate",
                format!("must be within 0.0 < rate <= 1.0 (got {rate})"),
            ));
        }
        if min_requests == 0 {
            return Err(InvalidParam::new("min_requests", "must be >= 1 (got 0)"));
        }
        let window = nonzero_duration("window", window)?;
        self.failure_rate = Some(FailureRate {
            rate,
            window,
            min_requests,
        });
        Ok(self)
    }

    /// Open on consecutive failures only.
    pub fn without_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Caps the open duration, which doubles on every failed probe in a row
    /// (must be >= `open_duration`).
    pub fn with_max_open_duration(mut self, max: Duration) -> Result<Self, InvalidParam> {
        if max < self.open_duration {
            return Err(InvalidParam::new(
                "max_open_duration",
                format!("must be >= open_duration ({:?}) (got {max:?})", self.open_duration),
            ));
        }
        self.max_open_duration = max;
        Ok(self)
    }

    /// How many probe requests a half-open circuit lets through; all must
    /// succeed to close it (1..=1000).
    pub fn with_half_open_probes(mut self, probes: u32) -> Result<Self, InvalidParam> {
        if !(1..=MAX_PROBES).contains(&probes) {
            return Err(InvalidParam::new(
                "half_open_probes",
                format!("must be within 1..={MAX_PROBES} (got {probes})"),
            ));
        }
        self.half_open_probes = probes;
        Ok(self)
    }

    /// The capacity of the outcome channel to the controller task (>= 1).
    /// Outcomes that do not fit are dropped and counted, never waited for.
    pub fn with_outcome_queue(mut self, capacity: usize) -> Result<Self, InvalidParam> {
        if capacity == 0 {
            return Err(InvalidParam::new("outcome_queue", "must be >= 1 (got 0)"));
        }
        self.outcome_queue = capacity;
        Ok(self)
    }

    /// Failures in a row that open the circuit.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How long the first open lasts (before jitter).
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// The cap on the open duration.
    pub fn max_open_duration(&self) -> Duration {
        self.max_open_duration
    }

    /// Probe requests per half-open period.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }
}
