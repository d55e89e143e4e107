use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::connect::TestUpstream;

fn params() -> PoolParams {
    PoolParams {
        min_connections: 2,
        max_connections: 4,
        connection_ttl: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(60),
        acquire_timeout: Duration::from_secs(5),
        health_check_interval: Duration::from_secs(30),
        max_streams_per_connection: 100,
        predictive: false,
    }
}

fn pool(flavor: Flavor, params: PoolParams, echo: bool) -> (Pool, Arc<TestUpstream>) {
    let up = Arc::new(TestUpstream {
        echo,
        ..TestUpstream::default()
    });
    let p = Pool::new("test".into(), flavor, Connector::Test(up.clone()), params);
    (p, up)
}

/// Lets spawned connect and maintenance tasks run (time is paused, so
/// this advances only as far as the next timer).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn prewarms_min_connections_with_no_traffic() {
    let (p, up) = pool(Flavor::Raw, params(), false);
    settle().await;
    assert_eq!(up.connects.load(Ordering::SeqCst), 2);
    let s = p.snapshot();
    assert_eq!((s.ready, s.active, s.open), (2, 0, 2), "{s:?}");
    // Still there, and idle, long after with nothing happening.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let s = p.snapshot();
    assert_eq!((s.idle, s.open), (2, 2), "{s:?}");
    assert_eq!(up.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn raw_pool_keeps_spares_ready_for_the_next_session() {
    let (p, up) = pool(Flavor::Raw, params(), false);
    settle().await;
    let lease = p.acquire_raw(false).await.unwrap();
    assert!(!lease.is_fresh());
    let (_io, _slot) = lease.into_parts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = p.snapshot();
    assert_eq!((s.active, s.ready), (1, 2), "{s:?}");
    assert_eq!(up.connects.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn acquire_times_out_with_a_typed_error_when_the_pool_is_full() {
    let mut pp = params();
    pp.min_connections = 0;
    pp.max_connections = 1;
    let (p, _up) = pool(Flavor::Raw, pp, false);
    let held = p.acquire_raw(false).await.unwrap();
    let start = Instant::now();
    let err = p.acquire_raw(false).await.unwrap_err();
    assert!(matches!(err, AcquireError::Exhausted { max: 1, .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_fifo_order() {
    let mut pp = params();
    pp.min_connections = 0;
    pp.max_connections = 1;
    let (p, _up) = pool(Flavor::Raw, pp, false);
    let held = p.acquire_raw(false).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for name in ["first", "second", "third"] {
        let (p, tx) = (p.clone(), tx.clone());
        tokio::spawn(async move {
            let lease = p.acquire_raw(false).await.unwrap();
            tx.send(name).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(lease);
        });
        settle().await;
    }
    // Give back a connection by returning an untouched lease.
    drop(held);
    let order: Vec<_> = [rx.recv().await, rx.recv().await, rx.recv().await]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(order, ["first", "second", "third"]);
}

#[tokio::test(start_paused = true)]
async fn dead_idle_connections_are_never_handed_out_and_get_replaced() {
    let (p, up) = pool(Flavor::Raw, params(), false);
    settle().await;
    // The upstream closes both idle connections.
    up.peers.lock().unwrap().clear();
    let lease = p.acquire_raw(false).await.unwrap();
    let (mut io, _slot) = lease.into_parts();
    assert!(io.is_idle_usable(), "handed out a closed connection");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.snapshot().ready, 2);
    assert!(up.connects.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(start_paused = true)]
async fn ttl_recycles_and_replaces_connections() {
    let mut pp = params();
    pp.connection_ttl = Duration::from_secs(120);
    let (p, up) = pool(Flavor::Raw, pp, false);
    settle().await;
    tokio::time::sleep(Duration::from_secs(121)).await;
    settle().await;
    assert_eq!(up.connects.load(Ordering::SeqCst), 4, "both replaced once");
    assert_eq!(p.snapshot().open, 2);
}

#[tokio::test(start_paused = true)]
async fn surplus_idle_connections_close_after_idle_timeout() {
    let mut pp = params();
    pp.min_connections = 1;
    let (p, _up) = pool(Flavor::Http(UpstreamProtocol::Http1), pp, true);
    settle().await;
    let leases = [
        p.acquire_http().await.unwrap(),
        p.acquire_http().await.unwrap(),
        p.acquire_http().await.unwrap(),
    ];
    assert_eq!(p.snapshot().active, 3);
    drop(leases);
    settle().await;
    assert_eq!(p.snapshot().open, 3);
    tokio::time::sleep(Duration::from_secs(62)).await;
    let s = p.snapshot();
    assert_eq!(s.open, 1, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn broken_lease_is_closed_not_pooled() {
    let mut pp = params();
    pp.min_connections = 1;
    let (p, _up) = pool(Flavor::Http(UpstreamProtocol::Http1), pp, true);
    settle().await;
    let mut lease = p.acquire_http().await.unwrap();
    lease.mark_broken();
    drop(lease);
    let s = p.snapshot();
    assert_eq!((s.open, s.ready), (0, 0), "{s:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.snapshot().ready, 1, "replaced in the background");
}

#[tokio::test(start_paused = true)]
async fn connect_failure_reaches_the_waiter_and_warmup_backs_off() {
    let (p, up) = pool(Flavor::Raw, params(), false);
    up.fail.store(true, Ordering::SeqCst);
    settle().await;
    let err = p.acquire_raw(false).await.unwrap_err();
    assert!(matches!(err, AcquireError::Connect(_)), "{err}");
    assert!(p.snapshot().failed > 0);
    up.fail.store(false, Ordering::SeqCst);
    // The backoff is at most 30 s; well within that the pool is warm again.
    tokio::time::sleep(Duration::from_secs(29)).await;
    let s = p.snapshot();
    assert_eq!((s.ready, s.failed), (2, 0), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn http2_streams_share_connections_up_to_the_stream_cap() {
    let mut pp = params();
    pp.min_connections = 0;
    pp.max_streams_per_connection = 2;
    let (p, up) = pool(Flavor::Http(UpstreamProtocol::Http2), pp, true);
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(p.acquire_http().await.unwrap());
    }
    assert!(leases.iter().all(HttpLease::is_h2));
    assert_eq!(up.connects.load(Ordering::SeqCst), 3);
    let s = p.snapshot();
    assert_eq!((s.active, s.open), (3, 3), "{s:?}");
    drop(leases);
    let _again = p.acquire_http().await.unwrap();
    assert_eq!(up.connects.load(Ordering::SeqCst), 3, "reused");
}

#[tokio::test(start_paused = true)]
async fn http1_request_round_trips_and_connection_is_reused() {
    let mut pp = params();
    pp.min_connections = 1;
    let (p, up) = pool(Flavor::Http(UpstreamProtocol::Http1), pp, true);
    settle().await;
    for _ in 0..3 {
        let mut lease = p.acquire_http().await.unwrap();
        let req = http::Request::get("/x")
            .header("host", "t")
            .body(crate::body::empty())
            .unwrap();
        let resp = lease.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"path\": \"/x\""));
    }
    assert_eq!(up.connects.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoint_keeps_nothing_warm() {
    let (p, _up) = pool(Flavor::Raw, params(), false);
    settle().await;
    p.set_enabled(false);
    settle().await;
    assert_eq!(p.snapshot().open, 0);
    p.set_enabled(true);
    settle().await;
    assert_eq!(p.snapshot().ready, 2);
}
