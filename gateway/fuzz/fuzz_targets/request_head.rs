//! Fuzzes the request head path: bytes parsed as an HTTP/1.1 head the way
//! hyper parses it, then `edge::admit` (default policy, or one with its
//! switches loosened by the first byte), the router over a fixed route
//! table and the hop-by-hop strip with `Via`.
//!
//! Invariants (asserted in `agentmux::fuzzing::request_head`, which says
//! them in full): no panic; refusals are 400/405; one `Host` equal to the
//! authority; a normalized path is a fixed point of `normalize`, starts
//! with `/`, has no dot segments, no empty ones (merge on), no escaped
//! unreserved characters and matches a reference normalizer; routing is
//! stable and `/admin` always meets the auth route; forwarding headers are
//! ours; the header rewrite strips exactly the hop-by-hop headers and keeps
//! the ones the edge set and every earlier `Via` entry.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentmux::fuzzing::request_head(data));
