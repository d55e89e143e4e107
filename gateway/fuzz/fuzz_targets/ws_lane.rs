//! Fuzzes the WebSocket frame lane: bytes fed as an agent's stream (masked
//! frames expected) through the agent → upstream lane over an in-memory
//! reader and writer that split reads and stall writes as the first bytes
//! say, with a small message limit (16–1036 bytes).
//!
//! Invariants (asserted in `agentmux::fuzzing::ws_lane`, which says them in
//! full): no panic and no endless loop; the lane holds at most one read
//! plus a carried control frame; it ends as a reference model of RFC 6455
//! says, a violation with exactly the model's close code (1002, 1007,
//! 1009), which the relay's close frame to the agent carries; every frame
//! written upstream is valid and masked and they are exactly the model's
//! accepted frames, then at most the frame in progress, then the relay's
//! 1001 close only at a frame boundary; as many messages as the model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentmux::fuzzing::ws_lane(data));
