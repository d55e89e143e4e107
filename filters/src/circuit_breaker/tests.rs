//! Breaker tests, in paused time: the controller task runs whenever the test
//! yields, so `settle` lets it drain its queue.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::controller::open_duration;
use super::*;
use crate::CountingMetrics;

/// Lets the controller task process everything queued.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn wait_for(breaker: &CircuitBreaker, state: CircuitState) {
    let mut rx = breaker.subscribe();
    rx.wait_for(|s| *s == state).await.unwrap();
    assert_eq!(breaker.state(), state);
}

fn breaker(params: BreakerParams) -> (CircuitBreaker, Arc<CountingMetrics>) {
    let m = Arc::new(CountingMetrics::default());
    (CircuitBreaker::new(params, m.clone()), m)
}

fn consecutive(n: u32) -> BreakerParams {
    BreakerParams::new(n, Duration::from_secs(1))
        .unwrap()
        .without_failure_rate()
}

fn fail(breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        breaker.check().unwrap().record(Outcome::Failure);
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_n_failures_fails_fast_probes_and_closes() {
    let (breaker, m) = breaker(consecutive(3));
    fail(&breaker, 2);
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker, 1);
    wait_for(&breaker, CircuitState::Open).await;
    assert_eq!(m.circuit_opened_count(), 1);
    assert_eq!(m.circuit_state(), CircuitState::Open);

    // Open: fail fast.
    let err = breaker.check().unwrap_err();
    assert_eq!(err.state(), CircuitState::Open);
    assert_eq!(m.circuit_rejected_count(), 1);

    // After open_duration: half-open, one probe at a time.
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;
    let probe = breaker.check().unwrap();
    assert!(probe.is_probe());
    assert_eq!(breaker.check().unwrap_err().state(), CircuitState::HalfOpen);

    // The probe succeeds: closed, and ordinary requests pass again.
    probe.record(Outcome::Success);
    wait_for(&breaker, CircuitState::Closed).await;
    assert!(!breaker.check().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer() {
    let (breaker, m) = breaker(consecutive(1));
    fail(&breaker, 1);
    wait_for(&breaker, CircuitState::Open).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;

    breaker.check().unwrap().record(Outcome::Failure);
    wait_for(&breaker, CircuitState::Open).await;
    assert_eq!(m.circuit_opened_count(), 2);

    // The second open lasts 2 s jittered down by at most 25%: still open
    // after 1.4 s, half-open by 2 s.
    tokio::time::advance(Duration::from_millis(1400)).await;
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(600)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;
}

#[tokio::test(start_paused = true)]
async fn all_probes_must_succeed_to_close() {
    let params = consecutive(1).with_half_open_probes(2).unwrap();
    let (breaker, _m) = breaker(params);
    fail(&breaker, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;

    let (p1, p2) = (breaker.check().unwrap(), breaker.check().unwrap());
    assert!(breaker.check().is_err());
    p1.record(Outcome::Success);
    settle().await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    p2.record(Outcome::Success);
    wait_for(&breaker, CircuitState::Closed).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let (breaker, _m) = breaker(consecutive(1));
    fail(&breaker, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;

    drop(breaker.check().unwrap());
    settle().await;
    let probe = breaker.check().expect("the slot came back");
    probe.record(Outcome::Success);
    wait_for(&breaker, CircuitState::Closed).await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_probe_outcome_is_re_granted_after_a_while() {
    let (breaker, _m) = breaker(consecutive(1));
    fail(&breaker, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;

    // The probe's outcome never arrives (as if dropped on a full channel).
    std::mem::forget(breaker.check().unwrap());
    settle().await;
    assert!(breaker.check().is_err());
    // After another open_duration the controller hands the slot out again
    // instead of staying half-open forever.
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    breaker.check().expect("slot re-granted").record(Outcome::Success);
    wait_for(&breaker, CircuitState::Closed).await;
}

#[tokio::test(start_paused = true)]
async fn dropped_permits_count_neither_way() {
    let (breaker, _m) = breaker(consecutive(3));
    fail(&breaker, 2);
    for _ in 0..10 {
        drop(breaker.check().unwrap());
    }
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Closed);
    // The two failures still count: one more opens.
    fail(&breaker, 1);
    wait_for(&breaker, CircuitState::Open).await;
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_the_open_are_ignored() {
    let (breaker, _m) = breaker(consecutive(1));
    let slow = breaker.check().unwrap();
    fail(&breaker, 1);
    wait_for(&breaker, CircuitState::Open).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;

    // A request admitted while closed finishes well now: not a probe, so it
    // must not close the circuit.
    slow.record(Outcome::Success);
    settle().await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_the_window_opens() {
    let params = BreakerParams::new(100, Duration::from_secs(1))
        .unwrap()
        .with_failure_rate(0.5, Duration::from_secs(10), 10)
        .unwrap();
    let (breaker, _m) = breaker(params);
    // Alternate: never two failures in a row, 50% overall.
    for i in 0..9 {
        let outcome = if i % 2 == 0 { Outcome::Success } else { Outcome::Failure };
        breaker.check().unwrap().record(outcome);
    }
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Closed, "below min_requests");
    breaker.check().unwrap().record(Outcome::Failure);
    wait_for(&breaker, CircuitState::Open).await;
}

#[tokio::test(start_paused = true)]
async fn failures_slide_out_of_the_window() {
    let params = BreakerParams::new(100, Duration::from_secs(1))
        .unwrap()
        .with_failure_rate(0.5, Duration::from_secs(10), 4)
        .unwrap();
    let (breaker, _m) = breaker(params);
    fail(&breaker, 3);
    settle().await;
    tokio::time::advance(Duration::from_secs(12)).await;
    // Old failures are gone: 1 failure in 4 is 25%.
    for outcome in [Outcome::Success, Outcome::Success, Outcome::Success] {
        breaker.check().unwrap().record(outcome);
    }
    fail(&breaker, 1);
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_full_outcome_channel_drops_and_counts_instead_of_blocking() {
    let params = consecutive(1000).with_outcome_queue(4).unwrap();
    let (breaker, m) = breaker(params);
    // The controller cannot run between these (nothing yields).
    for _ in 0..10 {
        breaker.check().unwrap().record(Outcome::Success);
    }
    assert_eq!(breaker.dropped_outcomes(), 6);
    assert_eq!(m.circuit_outcome_dropped_count(), 6);
}

#[tokio::test(start_paused = true)]
async fn the_controller_stops_with_the_last_handle() {
    let (breaker, _m) = breaker(consecutive(1));
    let mut rx = breaker.subscribe();
    drop(breaker);
    assert!(rx.changed().await.is_err(), "the watch sender is gone");
}

#[tokio::test(start_paused = true)]
async fn the_layer_counts_failure_statuses_and_errors_and_fails_fast() {
    let (breaker, _m) = breaker(consecutive(2));
    let layer = CircuitBreakerLayer::new(breaker.clone());
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let mut svc = layer.layer(mock);

    // A 200, then a 503 and an error: two failures in a row.
    for reply in [Some(200), Some(503), None] {
        let call = svc.ready().await.unwrap().call(Request::new(()));
        let (_, respond) = handle.next_request().await.unwrap();
        match reply {
            Some(code) => {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::from_u16(code).unwrap();
                respond.send_response(res);
            }
            None => respond.send_error("connection reset"),
        }
        let _ = call.await;
    }
    wait_for(&breaker, CircuitState::Open).await;

    let err = svc.ready().await.unwrap().call(Request::new(())).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some());

    // Half-open: the probe goes through the layer and closes the circuit.
    tokio::time::advance(Duration::from_secs(1)).await;
    wait_for(&breaker, CircuitState::HalfOpen).await;
    let call = svc.ready().await.unwrap().call(Request::new(()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new(()));
    call.await.unwrap();
    wait_for(&breaker, CircuitState::Closed).await;
}

#[tokio::test(start_paused = true)]
async fn custom_failure_statuses() {
    let (breaker, _m) = breaker(consecutive(1));
    let failures = [StatusCode::TOO_MANY_REQUESTS].into_iter().collect();
    let layer = CircuitBreakerLayer::new(breaker.clone()).with_failure_statuses(failures);
    let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, crate::BoxError>(res)
    }));
    svc.clone().oneshot(Request::new(())).await.unwrap();
    settle().await;
    assert_eq!(breaker.state(), CircuitState::Closed, "503 is not a failure here");
}

#[test]
fn open_durations_grow_are_capped_and_jittered_down() {
    let params = BreakerParams::new(1, Duration::from_secs(1))
        .unwrap()
        .with_max_open_duration(Duration::from_secs(8))
        .unwrap();
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let first = open_duration(&params, 0, &mut rng);
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_secs(1));
        let third = open_duration(&params, 2, &mut rng);
        assert!(third >= Duration::from_secs(3) && third <= Duration::from_secs(4));
        let capped = open_duration(&params, 40, &mut rng);
        assert!(capped >= Duration::from_secs(6) && capped <= Duration::from_secs(8));
    }
}

#[test]
fn params_errors_name_the_parameter() {
    let err = BreakerParams::new(0, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.to_string(), "consecutive_failures must be >= 1 (got 0)");
    let err = BreakerParams::new(1, Duration::ZERO).unwrap_err();
    assert_eq!(err.param(), "open_duration");
    let base = BreakerParams::default();
    let err = base
        .clone()
        .with_failure_rate(1.5, Duration::from_secs(1), 1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failure_rate must be within 0.0 < rate <= 1.0 (got 1.5)"
    );
    let err = base.clone().with_max_open_duration(Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.param(), "max_open_duration");
    assert_eq!(
        base.clone().with_half_open_probes(0).unwrap_err().param(),
        "half_open_probes"
    );
    assert_eq!(base.with_outcome_queue(0).unwrap_err().param(), "outcome_queue");
    // A long open duration raises the default cap rather than failing.
    let long = BreakerParams::new(1, Duration::from_secs(300)).unwrap();
    assert_eq!(long.max_open_duration(), Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn a_peer_trip_opens_on_own_timers_and_is_not_announced() {
    let (breaker, m) = breaker(consecutive(3));
    breaker.trip();
    wait_for(&breaker, CircuitState::Open).await;
    assert_eq!(m.circuit_opened_by_peer_count(), 1);
    assert_eq!(m.circuit_opened_count(), 0, "a peer's open is not a local open");
    // A second trip while open does not extend the timer: half-open
    // within this breaker's own open duration (1 s).
    tokio::time::sleep(Duration::from_millis(600)).await;
    breaker.trip();
    settle().await;
    assert_eq!(m.circuit_opened_by_peer_count(), 1);
    tokio::time::sleep(Duration::from_millis(401)).await;
    settle().await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // A probe succeeds: closed again, as after a local open.
    breaker.check().unwrap().record(Outcome::Success);
    wait_for(&breaker, CircuitState::Closed).await;
}
