//! Timeout tests, in paused time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::test_support::ChannelBody;
use crate::{CountingMetrics, TimeoutKind};

fn metrics() -> Arc<CountingMetrics> {
    Arc::new(CountingMetrics::default())
}

#[tokio::test(start_paused = true)]
async fn no_headers_in_time_is_elapsed() {
    let m = metrics();
    let layer = TimeoutLayer::new(TimeoutParams::new(Duration::from_secs(2)).unwrap(), m.clone());
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let mut svc = layer.layer(mock);

    let start = Instant::now();
    let call = svc.ready().await.unwrap().call(Request::new(()));
    let (_request, _never_answered) = handle.next_request().await.unwrap();
    let err = call.await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed error");
    assert_eq!(elapsed.after(), Duration::from_secs(2));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(m.timed_out_count(TimeoutKind::Request), 1);
}

#[tokio::test(start_paused = true)]
async fn headers_in_time_pass() {
    let layer = TimeoutLayer::new(TimeoutParams::new(Duration::from_secs(2)).unwrap(), metrics());
    let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(1999)).await;
        Ok::<_, crate::BoxError>(Response::new(()))
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn an_idle_body_errors_after_the_gap_but_not_while_frames_flow() {
    let m = metrics();
    let params = IdleTimeoutParams::new(Duration::from_secs(1)).unwrap();
    let (tx, body) = ChannelBody::new();
    let mut body = TimeoutBody::new(body, params.idle(), m.clone());

    // Frames every 900 ms for 9 s: never idle for a full second.
    let sender = tokio::spawn(async move {
        for i in 0..10u8 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            tx.send(Ok(Bytes::from(vec![i]))).await.unwrap();
        }
        // Then silence, with the stream still open.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tx);
    });
    for i in 0..10u8 {
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
    }
    let quiet_since = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(quiet_since.elapsed(), Duration::from_secs(1));
    let idle = err.downcast_ref::<IdleTimeout>().expect("an IdleTimeout error");
    assert_eq!(idle.idle(), Duration::from_secs(1));
    assert_eq!(m.timed_out_count(TimeoutKind::Idle), 1);
    // The stream is over after the error.
    assert!(body.frame().await.is_none());
    sender.abort();
}

#[tokio::test(start_paused = true)]
async fn the_layer_wraps_response_bodies() {
    let params = IdleTimeoutParams::new(Duration::from_millis(500)).unwrap();
    let layer = ResponseBodyTimeoutLayer::new(params, metrics());
    let (tx, body) = ChannelBody::new();
    let body = std::sync::Mutex::new(Some(body));
    let svc = layer.layer(tower::service_fn(move |_req: Request<()>| {
        let body = body.lock().unwrap().take().unwrap();
        async move { Ok::<_, crate::BoxError>(Response::new(body)) }
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
    let mut body = res.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(body.frame().await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_body_that_ends_in_time_ends_cleanly() {
    let (tx, body) = ChannelBody::new();
    let mut body = TimeoutBody::new(body, Duration::from_secs(1), metrics());
    tx.send(Ok(Bytes::from_static(b"only"))).await.unwrap();
    drop(tx);
    assert!(body.frame().await.unwrap().is_ok());
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn with_timeout_bounds_any_future() {
    let slow = tokio::time::sleep(Duration::from_secs(10));
    let err = with_timeout(Duration::from_secs(3), slow).await.unwrap_err();
    assert_eq!(err.after(), Duration::from_secs(3));
    assert_eq!(with_timeout(Duration::from_secs(3), async { 7 }).await, Ok(7));
}

#[test]
fn zero_timeouts_are_rejected() {
    let err = TimeoutParams::new(Duration::ZERO).unwrap_err();
    assert_eq!(err.to_string(), "request_timeout must be > 0s (got 0s)");
    assert_eq!(
        IdleTimeoutParams::new(Duration::ZERO).unwrap_err().param(),
        "idle_timeout"
    );
}
