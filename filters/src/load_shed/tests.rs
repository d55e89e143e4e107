//! Load-shed tests.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::test_support::ChannelBody;
use crate::{BoxError, CountingMetrics};

/// The senders of the bodies handed out so far.
type Senders = Arc<Mutex<Vec<mpsc::Sender<Result<Bytes, BoxError>>>>>;

/// A layer with `limit` slots over a service answering with streaming
/// bodies whose senders land in the returned list.
fn setup(
    limit: usize,
) -> (
    LoadShedLayer,
    Arc<CountingMetrics>,
    Senders,
    impl tower::Service<Request<()>, Response = Response<ChannelBody>, Error = BoxError> + Clone,
) {
    let m = Arc::new(CountingMetrics::default());
    let layer = LoadShedLayer::new(LoadShedParams::new(limit).unwrap(), m.clone());
    let senders = Arc::new(Mutex::new(Vec::new()));
    let list = senders.clone();
    let inner = service_fn(move |_req: Request<()>| {
        let (tx, body) = ChannelBody::new();
        list.lock().unwrap().push(tx);
        async move { Ok::<_, BoxError>(Response::new(body)) }
    });
    (layer, m, senders, inner)
}

#[tokio::test]
async fn the_next_request_is_shed_while_n_bodies_stream_and_admitted_after_one_ends() {
    let (layer, m, senders, inner) = setup(2);
    let svc = layer.layer(inner);

    let mut first = svc.clone().oneshot(Request::new(())).await.unwrap().into_body();
    let _second = svc.clone().oneshot(Request::new(())).await.unwrap();
    // Headers are back for both, but their bodies still stream: full.
    assert_eq!(layer.in_flight(), 2);
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    let overloaded = err.downcast_ref::<Overloaded>().expect("an Overloaded error");
    assert_eq!(overloaded.limit(), 2);
    assert_eq!(m.shed_count(), 1);
    assert_eq!(
        senders.lock().unwrap().len(),
        2,
        "the shed request never reached the inner service"
    );

    // The first stream finishes: its slot is free again.
    let tx = senders.lock().unwrap().remove(0);
    tx.send(Ok(Bytes::from_static(b"last"))).await.unwrap();
    drop(tx);
    while first.frame().await.is_some() {}
    assert_eq!(layer.in_flight(), 1);
    assert!(svc.oneshot(Request::new(())).await.is_ok());
}

#[tokio::test]
async fn a_dropped_body_releases_its_slot() {
    let (layer, _m, _senders, inner) = setup(1);
    let svc = layer.layer(inner);
    let res = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert!(svc.clone().oneshot(Request::new(())).await.is_err());
    drop(res);
    assert_eq!(layer.in_flight(), 0);
    assert!(svc.oneshot(Request::new(())).await.is_ok());
}

#[tokio::test]
async fn a_failed_request_releases_its_slot() {
    let m = Arc::new(CountingMetrics::default());
    let layer = LoadShedLayer::new(LoadShedParams::new(1).unwrap(), m);
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, BoxError>("upstream down".into())
    }));
    for _ in 0..3 {
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(err.downcast_ref::<Overloaded>().is_none());
    }
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn the_layer_clones_share_one_limit() {
    let (layer, _m, _senders, inner) = setup(1);
    let a = layer.layer(inner.clone());
    let b = layer.clone().layer(inner);
    let _held = a.oneshot(Request::new(())).await.unwrap();
    assert!(b.oneshot(Request::new(())).await.is_err());
}

#[test]
fn zero_in_flight_is_rejected() {
    let err = LoadShedParams::new(0).unwrap_err();
    assert_eq!(err.to_string(), "max_in_flight must be >= 1 (got 0)");
}
