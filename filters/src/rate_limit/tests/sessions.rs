use super::metrics;
use crate::rate_limit::{LimitKey, SessionLimitParams, SessionLimiter};

#[test]
fn sessions_are_limited_per_key_and_released_on_drop() {
    let m = metrics();
    let limiter = SessionLimiter::new(SessionLimitParams::new(2).unwrap(), m.clone());
    let key = LimitKey::from_bytes(b"agent");
    let other = LimitKey::from_bytes(b"other");

    let first = limiter.try_acquire(key).unwrap();
    let second = limiter.try_acquire(key).unwrap();
    let err = limiter.try_acquire(key).unwrap_err();
    assert_eq!(err.limit(), 2);
    assert_eq!(m.session_rejected_count(), 1);
    // Another key has its own slots.
    let _other = limiter.try_acquire(other).unwrap();
    assert_eq!(limiter.active(&key), 2);

    drop(first);
    assert_eq!(limiter.active(&key), 1);
    let third = limiter.try_acquire(key).unwrap();
    drop(second);
    drop(third);
    assert_eq!(limiter.active(&key), 0);
    // A key without live sessions leaves the table.
    assert_eq!(limiter.tracked_keys(), 1);
}

#[test]
fn clones_share_the_counts() {
    let limiter = SessionLimiter::new(SessionLimitParams::new(1).unwrap(), metrics());
    let clone = limiter.clone();
    let key = LimitKey::from_bytes(b"agent");
    let _permit = limiter.try_acquire(key).unwrap();
    assert!(clone.try_acquire(key).is_err());
}

#[test]
fn zero_sessions_is_rejected() {
    let err = SessionLimitParams::new(0).unwrap_err();
    assert_eq!(err.to_string(), "max_sessions must be >= 1 (got 0)");
}
