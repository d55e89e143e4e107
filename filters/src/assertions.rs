//! Compile-time checks that what the gateway moves across tasks and
//! threads is `Send` (and `Sync` where it is shared).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;
use tower_test::mock::Mock;

use crate::{auth, circuit_breaker, load_shed, rate_limit, retry, timeout};

type Body = Full<Bytes>;
type Inner = Mock<Request<Body>, Response<Body>>;
type InnerFuture = <Inner as Service<Request<Body>>>::Future;

fn send<T: Send>() {}
fn send_sync<T: Send + Sync>() {}
fn send_value<T: Send>(_: T) {}

#[test]
fn futures_and_bodies_are_send() {
    send::<crate::future::ResponseFuture<InnerFuture>>();
    send::<circuit_breaker::ResponseFuture<InnerFuture>>();
    send::<retry::ResponseFuture<Inner, Body, retry::DefaultClassifier>>();
    send::<timeout::ResponseFuture<InnerFuture>>();
    send::<timeout::ResponseBodyFuture<InnerFuture>>();
    send::<timeout::TimeoutBody<Body>>();
    send::<load_shed::ResponseFuture<InnerFuture>>();
    send::<load_shed::InFlightBody<Body>>();
    send::<circuit_breaker::Permit>();
    send::<rate_limit::SessionPermit>();
    send::<rate_limit::SessionMessages>();
}

#[test]
fn shared_state_and_layers_are_send_and_sync() {
    send_sync::<rate_limit::RateLimitLayer>();
    send_sync::<rate_limit::RequestLimiter>();
    send_sync::<rate_limit::MessageLimiter>();
    send_sync::<rate_limit::SessionLimiter>();
    send_sync::<circuit_breaker::CircuitBreaker>();
    send_sync::<circuit_breaker::CircuitBreakerLayer>();
    send_sync::<retry::RetryLayer>();
    send_sync::<retry::RetryBudget>();
    send_sync::<timeout::TimeoutLayer>();
    send_sync::<timeout::ResponseBodyTimeoutLayer>();
    send_sync::<auth::AuthLayer>();
    send_sync::<auth::Authenticator>();
    send_sync::<load_shed::LoadShedLayer>();
    send_sync::<rate_limit::RateLimit<Inner>>();
    send_sync::<retry::Retry<Inner>>();
}

#[tokio::test]
async fn the_message_admission_future_is_send() {
    let params = rate_limit::MessageLimitParams::new(1.0, 1, 1.0, 1, std::time::Duration::from_secs(1)).unwrap();
    let limiter = rate_limit::MessageLimiter::new(params, std::sync::Arc::new(crate::NoopMetrics));
    let mut session = limiter.session(rate_limit::LimitKey::from_bytes(b"k"));
    send_value(session.admit());
}
