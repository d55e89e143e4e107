//! Rate limits shared by several gateway instances (`scope = "global"`).
//!
//! # Where it sits
//!
//! Where a local [`crate::rate_limit::RateLimit`] would: after auth,
//! before anything that costs upstream work. The gateway builds it over a
//! [`LeaseSource`] backed by Redis.
//!
//! # How it works: a batched lease, not a round trip per request
//!
//! The store runs one GCRA per `(limit, key)` for all instances. An
//! instance does not ask it per request: it *leases* a batch of cells —
//! its share of the rate over a lease window (100 ms by default), at least
//! one, at most the burst — in one atomic call, and spends them locally.
//! When the lease runs low (half spent) it is topped up in the background,
//! so a key under steady traffic never waits for the store. Only the first
//! request of a key (or one after its lease expired) waits, for at most
//! the store's timeout. Cells not spent within [`GlobalLimitParams::lease_ttl`]
//! are dropped, so leases only ever make the limit stricter, never looser.
//!
//! When the store says the bucket is empty it also says when `min` cells
//! will conform again; until then the instance answers 429 without asking.
//! At saturation every instance therefore asks at most once per
//! quarter-lease of cells, whatever the request rate.
//!
//! # How it fails
//!
//! - Over the limit: [`RateLimited`] (429 + `Retry-After`), as locally.
//! - Store unreachable ([`LeaseSource::available`] false) or slower than its
//!   timeout: the request is decided by a local GCRA at the **local share**
//!   — the rate and burst divided by [`LeaseSource::instances`] — and
//!   counted with [`crate::FilterMetrics::rate_limit_fallback`]. No request
//!   waits on a dead store past its timeout; cells still leased are spent
//!   first.

mod future;
mod layer;
mod slot;
mod source;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::Request;
use tokio::time::Instant;
use tower_service::Service;

pub use future::ResponseFuture;
pub use layer::{GlobalLimitParams, GlobalRateLimitLayer};
pub use source::{Lease, LeaseFuture, LeaseRequest, LeaseSource, LeaseUnavailable};

use super::keyed::{KeyedGcra, quota};
use super::{GlobalKey, KeySource, LimitKey, RateLimited};
use crate::{BoxError, FilterMetrics};
use slot::{Slot, Slots, Step};

/// The shared state of a global request limit: leases per key, the store,
/// and the local-share fallback. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct GlobalLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    params: GlobalLimitParams,
    source: Arc<dyn LeaseSource>,
    slots: Slots,
    /// The local-share limiter and the instance count it was built for.
    fallback: Mutex<Option<(u32, Arc<KeyedGcra>)>>,
    metrics: Arc<dyn FilterMetrics>,
}

/// The synchronous part of a decision.
enum Attempt {
    Done(Result<(), RateLimited>),
    Wait(Arc<Slot>),
}

impl GlobalLimiter {
    /// A limiter with no leases yet.
    pub fn new(params: GlobalLimitParams, source: Arc<dyn LeaseSource>, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                params,
                source,
                slots: Slots::new(),
                fallback: Mutex::new(None),
                metrics,
            }),
        }
    }

    /// Admits `req` or says when its key may send again, waiting at most
    /// the store's timeout (only when the key holds no lease yet).
    pub async fn check<B>(&self, req: &Request<B>) -> Result<(), RateLimited> {
        let (global, local) = self.keys(req);
        self.admit(global, local).await
    }

    /// Admits one request for a key (both forms of it, from
    /// [`KeySource::global_key_from`] and [`KeySource::key_from`]).
    pub async fn admit(&self, global: GlobalKey, local: LimitKey) -> Result<(), RateLimited> {
        match self.attempt(global, local) {
            Attempt::Done(r) => r,
            Attempt::Wait(slot) => self.clone().wait(slot, local).await,
        }
    }

    /// What this limiter keys requests by.
    pub fn key_source(&self) -> &KeySource {
        &self.inner.params.key
    }

    /// Keys holding a lease (or a recent verdict) on this instance.
    pub fn tracked_keys(&self) -> usize {
        self.inner.slots.len()
    }

    fn keys<B>(&self, req: &Request<B>) -> (GlobalKey, LimitKey) {
        let source = &self.inner.params.key;
        (
            source.global_key_from(req.headers(), req.extensions()),
            source.key_from(req.headers(), req.extensions()),
        )
    }

    fn attempt(&self, global: GlobalKey, local: LimitKey) -> Attempt {
        let now = Instant::now();
        let inner = &self.inner;
        inner.slots.maybe_prune(now, inner.params.lease_ttl() * 2);
        let slot = inner.slots.get(global, now);
        match slot.step(now, inner.source.available(), self.low_water()) {
            Step::Admit { prefetch } => {
                if prefetch {
                    self.fetch(&slot);
                }
                Attempt::Done(Ok(()))
            }
            Step::Reject(wait) => Attempt::Done(Err(self.limited(wait))),
            Step::Fallback => Attempt::Done(self.fallback(local)),
            Step::Fetch => {
                self.fetch(&slot);
                Attempt::Wait(slot)
            }
            Step::Wait => Attempt::Wait(slot),
        }
    }

    /// Waits for the key's lease, then decides. Past the store's timeout
    /// the local share decides instead.
    async fn wait(self, slot: Arc<Slot>, local: LimitKey) -> Result<(), RateLimited> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.source.timeout();
        loop {
            let refilled = slot.refilled.notified();
            tokio::pin!(refilled);
            // Registered before looking, so a fetch that completes in
            // between still wakes this request.
            refilled.as_mut().enable();
            match slot.step(Instant::now(), inner.source.available(), self.low_water()) {
                Step::Admit { prefetch } => {
                    if prefetch {
                        self.fetch(&slot);
                    }
                    return Ok(());
                }
                Step::Reject(wait) => return Err(self.limited(wait)),
                Step::Fallback => return self.fallback(local),
                Step::Fetch => self.fetch(&slot),
                Step::Wait => {}
            }
            if tokio::time::timeout_at(deadline, refilled).await.is_err() {
                return self.fallback(local);
            }
        }
    }

    fn low_water(&self) -> u32 {
        self.inner.params.lease_size(self.inner.source.instances()) / 2
    }

    /// Starts a fetch of cells for `slot` in the background.
    fn fetch(&self, slot: &Arc<Slot>) {
        let p = &self.inner.params;
        let want = p.lease_size(self.inner.source.instances());
        let request = LeaseRequest {
            limit: p.limit.clone(),
            key: slot.key(),
            rate: p.rate,
            burst: p.burst,
            want,
            min: (want / 4).max(1),
        };
        let take = self.inner.source.take(request);
        let limit = self.inner.source.timeout();
        let ttl = p.lease_ttl();
        let slot = slot.clone();
        tokio::spawn(async move {
            // The source bounds its own calls; this bound holds even if it
            // does not.
            let result = tokio::time::timeout(limit, take).await.unwrap_or(Err(LeaseUnavailable));
            // After a failure, as long as a fetch may take: a store that
            // answers errors at once is asked at most that often per key.
            slot.complete(result, Instant::now(), ttl, limit);
        });
    }

    fn limited(&self, wait: std::time::Duration) -> RateLimited {
        self.inner.metrics.rate_limited();
        RateLimited::new(wait)
    }

    /// Decides on this instance's share of the limit.
    fn fallback(&self, local: LimitKey) -> Result<(), RateLimited> {
        let inner = &self.inner;
        inner.metrics.rate_limit_fallback();
        let n = inner.source.instances().max(1);
        let gcra = {
            let mut slot = inner.fallback.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some((built_for, g)) if *built_for == n => g.clone(),
                _ => {
                    let p = &inner.params;
                    let share = quota("rate", p.rate / f64::from(n), "burst", (p.burst / n).max(1))
                        .or_else(|_| quota("rate", p.rate, "burst", p.burst));
                    let Ok(share) = share else {
                        // Unreachable for validated parameters; admit
                        // rather than fail every request.
                        return Ok(());
                    };
                    let g = Arc::new(KeyedGcra::new(share, inner.metrics.clone()));
                    *slot = Some((n, g.clone()));
                    g
                }
            }
        };
        gcra.check(&local).map_err(|wait| self.limited(wait))
    }
}

/// Rejects requests over their key's global rate with [`RateLimited`].
#[derive(Clone, Debug)]
pub struct GlobalRateLimit<S> {
    inner: S,
    limiter: GlobalLimiter,
}

impl<S> GlobalRateLimit<S> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: GlobalLimiter) -> Self {
        Self { inner, limiter }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for GlobalRateLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (global, local) = self.limiter.keys(&req);
        match self.limiter.attempt(global, local) {
            Attempt::Done(Ok(())) => ResponseFuture::inner(self.inner.call(req)),
            Attempt::Done(Err(limited)) => ResponseFuture::rejected(limited),
            Attempt::Wait(slot) => {
                // The service that was made ready goes with the request;
                // a clone takes its place.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let wait = Box::pin(self.limiter.clone().wait(slot, local));
                ResponseFuture::waiting(wait, ready, req)
            }
        }
    }
}
