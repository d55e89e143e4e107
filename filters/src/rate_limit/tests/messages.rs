use std::time::Duration;

use tokio::time::Instant;

use super::metrics;
use crate::rate_limit::{LimitKey, MessageLimitParams, MessageLimiter, MessageScope};

fn limiter(
    per_session: f64,
    burst: u32,
    per_key: f64,
    max_delay: Duration,
) -> (MessageLimiter, std::sync::Arc<crate::CountingMetrics>) {
    let m = metrics();
    let params = MessageLimitParams::new(per_session, burst, per_key, burst, max_delay).unwrap();
    (MessageLimiter::new(params, m.clone()), m)
}

#[tokio::test(start_paused = true)]
async fn excess_messages_are_delayed_then_the_session_errors() {
    let (limiter, m) = limiter(10.0, 2, 1000.0, Duration::from_secs(1));
    let mut session = limiter.session(LimitKey::from_bytes(b"agent"));
    let start = Instant::now();

    // The burst passes at once.
    session.admit().await.unwrap();
    session.admit().await.unwrap();
    assert_eq!(Instant::now(), start);

    // Then the agent keeps sending faster than 10/s: each message waits for
    // its slot (about 100 ms)...
    let mut admitted = 0;
    let err = loop {
        let before = Instant::now();
        match session.admit().await {
            Ok(()) => {
                admitted += 1;
                let waited = before.elapsed();
                assert!(waited > Duration::ZERO && waited <= Duration::from_millis(101));
            }
            Err(e) => break e,
        }
    };
    // ...until it has been held back for max_delay in a row.
    assert_eq!(err.scope(), MessageScope::Session);
    assert!((9..=11).contains(&admitted), "admitted {admitted}");
    assert!(start.elapsed() <= Duration::from_millis(1001));
    assert_eq!(m.message_rejected_count(), 1);
    assert_eq!(m.message_delayed_count(), admitted);
}

#[tokio::test(start_paused = true)]
async fn an_agent_under_its_rate_is_never_closed() {
    let (limiter, m) = limiter(10.0, 1, 1000.0, Duration::from_millis(300));
    let mut session = limiter.session(LimitKey::from_bytes(b"agent"));
    for i in 0..100 {
        session.admit().await.unwrap();
        // Mostly under the rate, with an occasional quick pair that has to
        // wait: the delay clock resets once a message passes freely.
        let gap = if i % 5 == 0 { 20 } else { 150 };
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    assert_eq!(m.message_rejected_count(), 0);
    assert!(m.message_delayed_count() > 0);
}

#[tokio::test(start_paused = true)]
async fn a_message_that_alone_would_wait_too_long_fails_at_once() {
    // One message per second, but no message may wait more than 200 ms.
    let (limiter, _m) = limiter(1.0, 1, 1000.0, Duration::from_millis(200));
    let mut session = limiter.session(LimitKey::from_bytes(b"agent"));
    session.admit().await.unwrap();
    let before = Instant::now();
    assert!(session.admit().await.is_err());
    assert_eq!(Instant::now(), before, "failed without waiting");
}

#[tokio::test(start_paused = true)]
async fn sessions_of_one_key_share_the_key_rate() {
    // Sessions may each send 100/s, but the key only 10/s in all.
    let m = metrics();
    let params = MessageLimitParams::new(100.0, 1, 10.0, 1, Duration::from_millis(150)).unwrap();
    let limiter = MessageLimiter::new(params, m.clone());
    let key = LimitKey::from_bytes(b"agent");
    let mut a = limiter.session(key);
    let mut b = limiter.session(key);
    let mut other = limiter.session(LimitKey::from_bytes(b"someone-else"));

    a.admit().await.unwrap();
    let before = Instant::now();
    b.admit().await.unwrap();
    // b had to wait for the key's next slot (100 ms), though its own
    // session bucket was full.
    assert!(before.elapsed() >= Duration::from_millis(99));
    // Another key is not affected.
    let before = Instant::now();
    other.admit().await.unwrap();
    assert_eq!(Instant::now(), before);
    assert_eq!(limiter.tracked_keys(), 2);
}

#[test]
fn message_params_name_the_parameter() {
    let err = MessageLimitParams::new(0.0, 1, 1.0, 1, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.param(), "messages_per_second");
    let err = MessageLimitParams::new(1.0, 1, -1.0, 1, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.param(), "key_messages_per_second");
    let err = MessageLimitParams::new(1.0, 1, 1.0, 1, Duration::ZERO).unwrap_err();
    assert_eq!(err.to_string(), "max_delay must be > 0s (got 0s)");
}

/// The non-async form the gateway's relay uses gives the same decisions:
/// wait, then admit the same message without taking a second cell, and
/// fail once held back past `max_delay`.
#[tokio::test(start_paused = true)]
async fn try_admit_matches_admit() {
    use crate::rate_limit::Admission;
    let (limiter, m) = limiter(10.0, 2, 1000.0, Duration::from_secs(1));
    let mut session = limiter.session(LimitKey::from_bytes(b"agent"));
    assert!(matches!(session.try_admit(), Admission::Now));
    assert!(matches!(session.try_admit(), Admission::Now));
    let start = Instant::now();
    let mut admitted = 0;
    let err = loop {
        match session.try_admit() {
            Admission::Now => admitted += 1,
            Admission::Wait(d) => {
                assert!(d > Duration::ZERO && d <= Duration::from_millis(101), "{d:?}");
                tokio::time::sleep(d).await;
            }
            Admission::Exceeded(e) => break e,
        }
    };
    assert_eq!(err.scope(), MessageScope::Session);
    assert!((9..=11).contains(&admitted), "admitted {admitted}");
    assert!(start.elapsed() <= Duration::from_millis(1001));
    assert_eq!(m.message_delayed_count(), admitted);
    assert_eq!(m.message_rejected_count(), 1);
}
