//! Retry tests, in paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::test_support::{request, response};
use crate::{BoxError, CountingMetrics};

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap()
}

fn layer(max_attempts: u32, budget: RetryBudgetParams) -> (RetryLayer, Arc<CountingMetrics>) {
    let m = Arc::new(CountingMetrics::default());
    let params = RetryParams::new(max_attempts, backoff()).unwrap();
    let layer = RetryLayer::new(params, RetryBudget::new(budget), DefaultClassifier::new(), m.clone());
    (layer, m)
}

fn generous() -> RetryBudgetParams {
    RetryBudgetParams::new(1.0, 1000, Duration::from_secs(10)).unwrap()
}

/// A service answering every request with `status`, counting calls.
fn always(
    status: u16,
) -> (
    Arc<AtomicU32>,
    impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_req: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(response(status, ())) }
    });
    (calls, svc)
}

#[test]
fn backoff_delays_spread_uniformly_across_zero_to_cap() {
    let backoff = backoff();
    let mut rng = StdRng::seed_from_u64(7);
    let cap = backoff.cap().as_secs_f64();
    let draws: Vec<f64> = (0..100_000)
        .map(|_| backoff.delay_with(10, &mut rng).as_secs_f64())
        .collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let min = draws.iter().copied().fold(f64::MAX, f64::min);
    let max = draws.iter().copied().fold(0.0, f64::max);
    assert!(draws.iter().all(|d| (0.0..=cap).contains(d)));
    assert!((mean - cap / 2.0).abs() < cap * 0.01, "mean {mean}");
    assert!(min < cap * 0.001, "min {min}");
    assert!(max > cap * 0.999, "max {max}");
    // The upper quarter is as likely as the lower: full jitter, not a
    // delay bunched near the cap.
    let low = draws.iter().filter(|d| **d < cap / 4.0).count();
    let high = draws.iter().filter(|d| **d > cap * 0.75).count();
    assert!((low as f64 / high as f64 - 1.0).abs() < 0.05);
}

#[test]
fn backoff_ceiling_doubles_up_to_the_cap() {
    let backoff = backoff();
    let ceilings: Vec<u64> = (0..6).map(|n| backoff.ceiling(n).as_millis() as u64).collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    let mut rng = StdRng::seed_from_u64(1);
    assert!((0..1000).all(|_| backoff.delay_with(0, &mut rng) <= Duration::from_millis(100)));
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_at_its_ratio() {
    // An upstream that is down, 1000 requests over 10 s, up to 3 attempts
    // each, a budget of 10% with a floor of 1/s over a 10 s window. Short
    // backoffs keep the run (and so the floor's share) at about 10 s.
    let m = Arc::new(CountingMetrics::default());
    let quick = Backoff::new(Duration::from_millis(1), Duration::from_millis(1)).unwrap();
    let budget = RetryBudgetParams::new(0.1, 1, Duration::from_secs(10)).unwrap();
    let layer = RetryLayer::new(
        RetryParams::new(3, quick).unwrap(),
        RetryBudget::new(budget),
        DefaultClassifier::new(),
        m.clone(),
    );
    let (calls, inner) = always(503);
    let svc = layer.layer(inner);
    let start = tokio::time::Instant::now();
    for _ in 0..1000 {
        let res = svc.clone().oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let retries = calls.load(Ordering::SeqCst) - 1000;
    // 10% of 1000 = 100, plus the floor: 10 per window, and the run spans
    // a little over one window (the first floor's withdrawals age out).
    // Not 1000 · 2.
    let elapsed = start.elapsed();
    assert!(
        (100..=120).contains(&retries),
        "{retries} retries for 1000 requests in {elapsed:?}"
    );
    assert_eq!(m.retried_count(), u64::from(retries));
    assert!(m.budget_exhausted_count() > 800);
}

#[tokio::test(start_paused = true)]
async fn a_failed_get_is_retried_until_it_succeeds() {
    let (layer, m) = layer(3, generous());
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let mut svc = layer.layer(mock);

    let call = tokio::spawn(async move { svc.ready().await.unwrap().call(request(Method::GET)).await });
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(response(502, ()));
    let started = tokio::time::Instant::now();
    let (_, respond) = handle.next_request().await.unwrap();
    // The retry waited its backoff: within [0, base].
    assert!(started.elapsed() <= Duration::from_millis(100));
    respond.send_response(response(200, ()));

    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(m.retried_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped_and_the_last_result_returned() {
    let (layer, m) = layer(4, generous());
    let (calls, inner) = always(504);
    let res = layer.layer(inner).oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(m.retried_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_and_non_retryable_statuses_are_sent_once() {
    let (layer, _m) = layer(3, generous());
    let (calls, inner) = always(503);
    let svc = layer.layer(inner);
    svc.clone().oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (calls, inner) = always(500);
    layer.layer(inner).oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[derive(Debug)]
struct NeverSentError;

impl std::fmt::Display for NeverSentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect refused")
    }
}

impl std::error::Error for NeverSentError {}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_only_when_never_sent() {
    let classifier = DefaultClassifier::new().with_never_sent(|e| e.downcast_ref::<NeverSentError>().is_some());
    let params = RetryParams::new(3, backoff()).unwrap();
    let layer = RetryLayer::new(
        params,
        RetryBudget::new(generous()),
        classifier,
        Arc::new(crate::NoopMetrics),
    );
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = layer.layer(service_fn(move |req: Request<()>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let never_sent = req.method() == Method::POST && n == 0;
        async move {
            if never_sent {
                Err::<Response<()>, BoxError>(Box::new(NeverSentError))
            } else {
                Err("reset after the request was written".into())
            }
        }
    }));
    // A POST that never left: retried (safe for any method); the retry then
    // fails after sending, and that error is returned as is.
    let err = svc.clone().oneshot(request(Method::POST)).await.unwrap_err();
    assert_eq!(err.to_string(), "reset after the request was written");
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);
    // An error after sending is not retried, even for a GET.
    svc.oneshot(request(Method::GET)).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A body that cannot be replayed (like a stream not buffered).
#[derive(Debug)]
struct Streaming;

impl ReplayableBody for Streaming {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_replayed_is_sent_once() {
    let (layer, m) = layer(3, generous());
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = layer.layer(service_fn(move |_req: Request<Streaming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(response(503, ())) }
    }));
    let res = svc.oneshot(Request::new(Streaming)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.retried_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn retries_replay_headers_extensions_and_body() {
    let (layer, _m) = layer(2, generous());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = layer.layer(service_fn(move |req: Request<String>| {
        let agent = req.extensions().get::<crate::AgentIdentity>().cloned();
        log.lock()
            .unwrap()
            .push((req.headers()["x-trace"].clone(), agent, req.body().clone()));
        async { Ok::<_, BoxError>(response(503, ())) }
    }));
    let mut req = Request::new("payload".to_string());
    req.headers_mut().insert("x-trace", "t1".parse().unwrap());
    req.extensions_mut().insert(crate::AgentIdentity("a".into()));
    svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].2, "payload");
}

#[tokio::test(start_paused = true)]
async fn budget_ratio_is_exact_not_quantised() {
    // tower's TpsBudget turns 0.6 into 1.0; ours keeps 0.6.
    let budget = RetryBudget::new(RetryBudgetParams::new(0.6, 0, Duration::from_secs(10)).unwrap());
    for _ in 0..100 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 60);
    let taken = (0..100).filter(|_| budget.withdraw()).count();
    assert_eq!(taken, 60);
}

#[tokio::test(start_paused = true)]
async fn deposits_expire_after_the_ttl() {
    let budget = RetryBudget::new(RetryBudgetParams::new(1.0, 0, Duration::from_secs(10)).unwrap());
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 10);
    tokio::time::advance(Duration::from_secs(12)).await;
    assert_eq!(budget.available(), 0);
}

#[test]
fn params_errors_name_the_parameter() {
    let err = RetryBudgetParams::new(1.5, 10, Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.to_string(), "ratio must be within 0.0..=1.0 (got 1.5)");
    let err = RetryBudgetParams::new(0.2, 10, Duration::from_millis(500)).unwrap_err();
    assert_eq!(err.param(), "ttl");
    let err = RetryParams::new(0, backoff()).unwrap_err();
    assert_eq!(err.to_string(), "max_attempts must be within 1..=20 (got 0)");
    let err = Backoff::new(Duration::ZERO, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.param(), "backoff_base");
    let err = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.param(), "backoff_cap");
}
