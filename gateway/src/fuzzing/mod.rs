//! Entry points for the fuzz targets in `gateway/fuzz/`: **for the fuzz
//! targets only, not API** (hidden from the docs, may change at any time).
//!
//! Each function takes the fuzzer's bytes, drives one crate-private part
//! of the gateway the way the data path does, and panics when an
//! invariant breaks — a panic is what libFuzzer records as a crash. They
//! live in the crate because the code they drive is crate-private; the
//! targets themselves are one line each.
//!
//! - [`request_head`]: an HTTP/1.1 request head through the edge, the
//!   router and the header rewrite.
//! - [`ws_lane`]: an agent's WebSocket bytes through the agent → upstream
//!   lane, checked against a reference model of RFC 6455.
//!
//! The config parser and the mux decoder are public, so their targets
//! call them directly.

mod request_head;
#[cfg(test)]
mod tests;
mod ws_lane;

pub use request_head::request_head;
pub use ws_lane::ws_lane;
