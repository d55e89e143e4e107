//! What a global limit asks of the shared store: leases of cells.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::rate_limit::GlobalKey;

/// A boxed future, as trait objects return them.
pub type LeaseFuture = Pin<Box<dyn Future<Output = Result<Lease, LeaseUnavailable>> + Send>>;

/// The store every gateway instance takes cells of a global limit from
/// (the gateway implements it over Redis).
///
/// The store runs one GCRA per `(limit, key)` shared by all instances and
/// hands out cells in batches: [`LeaseSource::take`] asks for up to `want`
/// cells at once, atomically, and the instance then spends them locally.
pub trait LeaseSource: Send + Sync + fmt::Debug + 'static {
    /// Takes up to `request.want` cells. Grants nothing (with the wait
    /// until `request.min` cells conform) rather than fewer than
    /// `request.min`. Resolves within [`LeaseSource::timeout`]; an error
    /// means the store did not answer.
    fn take(&self, request: LeaseRequest) -> LeaseFuture;

    /// Whether the store is reachable as far as the caller knows. While it
    /// is not, limits decide on their local share without asking it.
    fn available(&self) -> bool;

    /// How many instances share each limit: the local share of a limit is
    /// its rate divided by this. At least 1.
    fn instances(&self) -> u32;

    /// The longest a [`LeaseSource::take`] may take.
    fn timeout(&self) -> Duration;
}

/// One request for cells.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRequest {
    /// Which limit (the filter's name): buckets of different limits never
    /// mix.
    pub limit: Arc<str>,
    /// The agent's key within the limit.
    pub key: GlobalKey,
    /// Cells per second, all instances together.
    pub rate: f64,
    /// Bucket size, all instances together.
    pub burst: u32,
    /// Cells wanted.
    pub want: u32,
    /// Fewest cells worth a grant (1 ≤ min ≤ want).
    pub min: u32,
}

/// Cells granted to this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Cells granted: 0, or between `min` and `want`.
    pub granted: u32,
    /// When nothing was granted: how long until `min` cells conform.
    pub retry_after: Duration,
}

/// The store did not answer (down, or slower than its timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseUnavailable;

impl fmt::Display for LeaseUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared rate-limit store did not answer")
    }
}

impl std::error::Error for LeaseUnavailable {}
