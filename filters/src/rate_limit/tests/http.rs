use std::time::Duration;

use http::{HeaderName, Request, Response};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{from_ip, metrics};
use crate::rate_limit::{KeySource, LimitKey, RateLimitLayer, RateLimitParams, RateLimited};
use crate::{AgentIdentity, BoxError, InvalidParam};

fn ok_service() -> impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone {
    service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(())) })
}

#[tokio::test(start_paused = true)]
async fn gcra_admits_the_rate_plus_one_burst_over_simulated_time() {
    let params = RateLimitParams::new(KeySource::ClientIp, 10.0, 5).unwrap();
    let layer = RateLimitLayer::new(params, metrics());
    let svc = layer.layer(ok_service());

    // 10 s of an agent trying every 10 ms (100/s against a limit of 10/s).
    let mut admitted = 0;
    for _ in 0..1000 {
        if svc.clone().oneshot(from_ip("10.0.0.1")).await.is_ok() {
            admitted += 1;
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // rate · time = 100, plus at most one burst (5).
    assert!(
        (99..=106).contains(&admitted),
        "admitted {admitted}, expected 100 + burst"
    );
}

#[tokio::test(start_paused = true)]
async fn rejection_carries_retry_after_and_skips_the_inner_service() {
    let m = metrics();
    let params = RateLimitParams::new(KeySource::ClientIp, 2.0, 1).unwrap();
    let layer = RateLimitLayer::new(params, m.clone());
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let mut svc = layer.layer(mock);

    handle.allow(2);
    let first = svc.ready().await.unwrap().call(from_ip("10.0.0.1"));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new(()));
    first.await.unwrap();

    let err = svc.ready().await.unwrap().call(from_ip("10.0.0.1")).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited error");
    assert!(limited.retry_after() > Duration::ZERO);
    assert!(limited.retry_after() <= Duration::from_millis(500));
    assert_eq!(limited.retry_after_secs(), 1);
    assert_eq!(m.rate_limited_count(), 1);
    // The rejected request never reached the inner service.
    assert!(futures_util::poll!(Box::pin(handle.next_request())).is_pending());
}

#[tokio::test(start_paused = true)]
async fn one_flooding_key_does_not_limit_another() {
    let header = HeaderName::from_static("x-agent-id");
    let params = RateLimitParams::new(KeySource::Header(header), 1.0, 1).unwrap();
    let limiter = RateLimitLayer::new(params, metrics()).limiter().clone();
    let with_agent = |id: &str| {
        let mut req = from_ip("10.0.0.1");
        req.headers_mut().insert("x-agent-id", id.parse().unwrap());
        req
    };
    assert!(limiter.check(&with_agent("a")).is_ok());
    for _ in 0..100 {
        assert!(limiter.check(&with_agent("a")).is_err());
    }
    assert!(limiter.check(&with_agent("b")).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_request_without_its_header_is_limited_by_client_ip() {
    let header = HeaderName::from_static("x-agent-id");
    let params = RateLimitParams::new(KeySource::Header(header), 1.0, 1).unwrap();
    let layer = RateLimitLayer::new(params, metrics());
    let limiter = layer.limiter();
    assert!(limiter.check(&from_ip("10.0.0.1")).is_ok());
    // Same IP, still no header: same bucket.
    assert!(limiter.check(&from_ip("10.0.0.1")).is_err());
    // Another IP: its own bucket. IPv4-mapped IPv6 is the same address.
    assert!(limiter.check(&from_ip("10.0.0.2")).is_ok());
    assert!(limiter.check(&from_ip("[::ffff:10.0.0.2]")).is_err());
}

#[tokio::test(start_paused = true)]
async fn api_keys_are_keyed_by_identity_or_hashed_key() {
    let params = RateLimitParams::new(KeySource::ApiKey, 1.0, 1).unwrap();
    let layer = RateLimitLayer::new(params, metrics());
    let limiter = layer.limiter();

    // Bearer and x-api-key carrying the same key share one bucket.
    let mut bearer = from_ip("10.0.0.1");
    bearer
        .headers_mut()
        .insert("authorization", "Bearer sk-secret-1".parse().unwrap());
    let mut x_api_key = from_ip("10.0.0.2");
    x_api_key
        .headers_mut()
        .insert("x-api-key", "sk-secret-1".parse().unwrap());
    assert!(limiter.check(&bearer).is_ok());
    assert!(limiter.check(&x_api_key).is_err());

    // The identity auth inserted wins over the raw key.
    let mut named = from_ip("10.0.0.1");
    named
        .headers_mut()
        .insert("authorization", "Bearer sk-secret-1".parse().unwrap());
    named.extensions_mut().insert(AgentIdentity("ci-agent".into()));
    assert!(limiter.check(&named).is_ok());

    // The key is a hash: its debug form does not contain the secret.
    let key = KeySource::ApiKey.key_for(&bearer);
    assert!(!format!("{key:?}").contains("secret"));
    assert_ne!(key, LimitKey::from_bytes(b"sk-secret-1"));
}

#[tokio::test(start_paused = true)]
async fn key_table_is_pruned_so_memory_stays_bounded() {
    let m = metrics();
    let params = RateLimitParams::new(KeySource::ApiKey, 10.0, 5).unwrap();
    let limiter = RateLimitLayer::new(params, m.clone()).limiter().clone();

    // A flood of distinct keys within one instant: all still inside their
    // burst window, so all are tracked (pruning keeps live state).
    for i in 0..10_000u32 {
        let key = LimitKey::from_bytes(&i.to_be_bytes());
        limiter.check_key(&key).unwrap();
    }
    assert_eq!(limiter.tracked_keys(), 10_000);

    // Once their buckets are full again the entries carry no information;
    // the next check after the prune interval drops them.
    tokio::time::advance(Duration::from_secs(11)).await;
    limiter.check_key(&LimitKey::from_bytes(b"newcomer")).unwrap();
    assert!(limiter.tracked_keys() <= 1, "{} keys left", limiter.tracked_keys());
    assert!(m.rate_limit_keys() <= 1);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_is_pruned_by_count_too() {
    let params = RateLimitParams::new(KeySource::ApiKey, 1000.0, 1).unwrap();
    let limiter = RateLimitLayer::new(params, metrics()).limiter().clone();
    // 1 ms per key at 1000/s: each bucket is full again 1 ms later, so
    // every count-triggered prune can drop almost everything before it.
    for i in 0..40_000u32 {
        limiter.check_key(&LimitKey::from_bytes(&i.to_be_bytes())).unwrap();
        if i % 1000 == 0 {
            tokio::time::advance(Duration::from_millis(2)).await;
        }
    }
    assert!(
        limiter.tracked_keys() < 20_000,
        "{} keys tracked",
        limiter.tracked_keys()
    );
}

#[test]
fn params_errors_name_the_parameter() {
    let err = RateLimitParams::new(KeySource::ClientIp, 0.0, 1).unwrap_err();
    assert_eq!(err.param(), "requests_per_second");
    assert_eq!(err.to_string(), "requests_per_second must be > 0 (got 0)");
    let err = RateLimitParams::new(KeySource::ClientIp, f64::NAN, 1).unwrap_err();
    assert_eq!(err.param(), "requests_per_second");
    let err = RateLimitParams::new(KeySource::ClientIp, 5.0, 0).unwrap_err();
    assert_eq!(err.to_string(), "burst must be >= 1 (got 0)");
    assert!(RateLimitParams::new(KeySource::ClientIp, 0.5, 1).is_ok());
}

#[test]
fn key_source_parses_the_config_form() {
    assert_eq!("client-ip".parse::<KeySource>(), Ok(KeySource::ClientIp));
    assert_eq!("api-key".parse::<KeySource>(), Ok(KeySource::ApiKey));
    assert_eq!(
        "header:x-agent-id".parse::<KeySource>(),
        Ok(KeySource::Header(HeaderName::from_static("x-agent-id")))
    );
    let err: InvalidParam = "cookie".parse::<KeySource>().unwrap_err();
    assert_eq!(err.param(), "key");
    assert!("header:bad name".parse::<KeySource>().is_err());
}
