//! Fuzzes the agentmux.v1 decoder: any bytes, as one WebSocket message.
//!
//! The decoder must never panic, and every frame it accepts must encode
//! again and decode to the same frame (what one side accepts, the other
//! could have sent).

#![no_main]

use agentmux::mux::{Decoder, decode_message, encode};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Decoder::new(Bytes::copy_from_slice(data)) {
        match item {
            Ok(frame) => {
                let mut buf = BytesMut::new();
                encode(&frame, &mut buf).expect("a decoded frame encodes");
                let again = decode_message(buf.freeze()).expect("an encoded frame decodes");
                assert_eq!(again, vec![frame]);
            }
            Err(e) => {
                let _ = e.code();
            }
        }
    }
});
