//! Global rate limits over Redis: the batched GCRA script and the
//! [`LeaseSource`] the filters crate's global limiter asks.
//!
//! One bucket per `(limit, key)` lives in Redis as its theoretical arrival
//! time (TAT, microseconds on the Redis server's clock, so instances with
//! skewed clocks agree). The script grants up to `want` cells at once —
//! never fewer than `min`, never more than the bucket holds — and advances
//! the TAT by what it granted, atomically. It expires the key when the
//! bucket is full again, so idle keys cost nothing.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use agentmux_filters::rate_limit::global::{Lease, LeaseFuture, LeaseRequest, LeaseSource, LeaseUnavailable};

use super::ClusterState;

/// The batched GCRA: `KEYS[1]` the bucket; `ARGV` period (µs per cell),
/// burst, want, min. Returns `{granted, wait_us}`: `wait_us` is how long
/// until `min` cells conform when nothing was granted.
const LEASE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local min = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = math.floor((burst * period - (tat - now)) / period + 1e-9)
if room < min then
  local wait = tat + min * period - burst * period - now
  if wait < 0 then wait = 0 end
  return {0, math.ceil(wait)}
end
local granted = math.min(room, want)
tat = tat + granted * period
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {granted, 0}
";

static LEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEASE_SCRIPT));

/// The lease source of every global limit on this instance.
#[derive(Debug)]
pub(crate) struct RedisLeases(pub(crate) Arc<ClusterState>);

impl LeaseSource for RedisLeases {
    fn take(&self, request: LeaseRequest) -> LeaseFuture {
        let state = self.0.clone();
        Box::pin(async move {
            let key = state.keys().rate_limit(&request.limit, &request.key.to_hex());
            let period_us = 1e6 / request.rate;
            let LeaseRequest { burst, want, min, .. } = request;
            let reply: Vec<i64> = state
                .link()
                .call("lease", |mut conn| async move {
                    let mut call = LEASE.prepare_invoke();
                    call.key(key).arg(period_us).arg(burst).arg(want).arg(min);
                    call.invoke_async(&mut conn).await
                })
                .await
                .map_err(|_| LeaseUnavailable)?;
            let granted = reply.first().copied().unwrap_or(0).clamp(0, i64::from(want));
            let wait_us = reply.get(1).copied().unwrap_or(0).max(0);
            Ok(Lease {
                granted: u32::try_from(granted).unwrap_or(0),
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            })
        })
    }

    fn available(&self) -> bool {
        self.0.connected()
    }

    fn instances(&self) -> u32 {
        self.0.instances()
    }

    fn timeout(&self) -> Duration {
        self.0.link().command_timeout()
    }
}
