//! Tests of the rate-limit filters, all in paused tokio time.

mod http;
mod messages;
mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::{ClientAddr, CountingMetrics};

fn metrics() -> Arc<CountingMetrics> {
    Arc::new(CountingMetrics::default())
}

fn from_ip(ip: &str) -> ::http::Request<()> {
    let mut req = ::http::Request::new(());
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    req.extensions_mut().insert(ClientAddr(addr));
    req
}
