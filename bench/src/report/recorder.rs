//! Shared counters and histograms of one load run. Sessions batch latency
//! samples locally and merge them under a lock now and then, so thousands
//! of sessions do not each own a histogram (one is ~25 KiB) nor contend on
//! every message. Counters are atomics the progress display reads live.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Kinds of failure the report counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// TCP connect failed or timed out.
    Connect,
    /// TLS handshake failed.
    Tls,
    /// WebSocket upgrade refused or malformed (any non-101 answer).
    Handshake,
    /// HTTP answered with a non-2xx status.
    HttpStatus,
    /// The connection broke mid-session (reset, EOF without close).
    Io,
    /// The peer closed a WebSocket with a code other than 1000.
    Closed,
    /// No reply within the timeout, or replies still missing at the end.
    Timeout,
    /// A frame or event the generator could not make sense of.
    Protocol,
}

impl ErrorKind {
    /// Every kind, in the order the JSON report lists them.
    pub(crate) const ALL: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Handshake,
        ErrorKind::HttpStatus,
        ErrorKind::Io,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
    ];

    /// The key used in the JSON report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Handshake => "handshake",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Io => "io",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which histogram a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    /// Request → reply (WebSocket echo, HTTP response, SSE first token).
    Latency,
    /// TCP connect.
    Connect,
    /// TLS handshake.
    Tls,
    /// WebSocket upgrade (request sent → 101 received).
    Handshake,
    /// Whole session setup: connect + TLS + upgrade.
    Setup,
    /// SSE: gap between consecutive tokens.
    InterToken,
}

const METRICS: usize = 6;

/// Live counters and merged histograms of a run.
pub(crate) struct Recorder {
    histograms: Vec<Mutex<Histogram<u64>>>,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    first_errors: Mutex<Vec<(ErrorKind, String)>>,
    /// Messages (or requests) sent.
    pub(crate) sent: AtomicU64,
    /// Replies (or SSE tokens) received, checked or not.
    pub(crate) received: AtomicU64,
    /// Payload bytes sent.
    pub(crate) bytes_sent: AtomicU64,
    /// Payload bytes received.
    pub(crate) bytes_received: AtomicU64,
    /// Replies whose content changed.
    pub(crate) mismatched: AtomicU64,
    /// Intact replies out of sequence.
    pub(crate) out_of_order: AtomicU64,
    /// Messages sent that never got a reply.
    pub(crate) unanswered: AtomicU64,
    /// Sessions that completed setup.
    pub(crate) sessions_opened: AtomicU64,
    /// Sessions that ended cleanly (churn or end of run).
    pub(crate) sessions_closed: AtomicU64,
    /// Sessions currently open.
    pub(crate) sessions_active: AtomicU64,
    /// SSE streams that ended with their `[DONE]` event.
    pub(crate) streams_completed: AtomicU64,
}

impl Recorder {
    /// An empty recorder. Histograms span 1 µs to 1 hour at 3 significant digits.
    pub(crate) fn new() -> Result<Self, hdrhistogram::CreationError> {
        let histograms = (0..METRICS)
            .map(|_| new_histogram().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            histograms,
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            first_errors: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            sessions_opened: AtomicU64::new(0),
            sessions_closed: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
        })
    }

    /// Counts one error of `kind`.
    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the first detail seen for each kind, for the report.
    pub(crate) fn note(&self, kind: ErrorKind, detail: &str) {
        let mut first = self
            .first_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !first.iter().any(|(k, _)| *k == kind) {
            first.push((kind, detail.to_string()));
        }
    }

    /// The first detail seen for each kind.
    pub(crate) fn first_errors(&self) -> Vec<(ErrorKind, String)> {
        self.first_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Errors of `kind` so far.
    pub(crate) fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()].load(Ordering::Relaxed)
    }

    /// All errors so far.
    pub(crate) fn errors_total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.errors(*k)).sum()
    }

    /// Records one sample now (for rare events such as a connect).
    pub(crate) fn record(&self, metric: Metric, micros: u64) {
        self.lock(metric).saturating_record(micros.max(1));
    }

    /// Merges a batch of samples.
    pub(crate) fn record_batch(&self, metric: Metric, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let mut h = self.lock(metric);
        for m in micros {
            h.saturating_record((*m).max(1));
        }
    }

    /// A copy of one histogram.
    pub(crate) fn histogram(&self, metric: Metric) -> Histogram<u64> {
        self.lock(metric).clone()
    }

    fn lock(&self, metric: Metric) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        // A panic while holding the lock cannot leave a histogram
        // inconsistent in a way that matters for a report: keep going.
        self.histograms[metric as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shorthand for a relaxed load of a counter.
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Shorthand for a relaxed add to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
}

/// A session's local batch of latency samples, flushed into the recorder
/// every few hundred samples and when dropped.
pub(crate) struct Samples<'a> {
    recorder: &'a Recorder,
    metric: Metric,
    batch: Vec<u64>,
}

impl<'a> Samples<'a> {
    /// A batch for `metric`.
    pub(crate) fn new(recorder: &'a Recorder, metric: Metric) -> Self {
        Self {
            recorder,
            metric,
            batch: Vec::with_capacity(64),
        }
    }

    /// Adds one sample in microseconds.
    pub(crate) fn push(&mut self, micros: u64) {
        self.batch.push(micros);
        if self.batch.len() >= 256 {
            self.flush();
        }
    }

    /// Merges the batch now.
    pub(crate) fn flush(&mut self) {
        self.recorder.record_batch(self.metric, &self.batch);
        self.batch.clear();
    }
}

impl Drop for Samples<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
