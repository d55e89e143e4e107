//! Unit tests of the frame relay: lanes fed byte streams split at every
//! boundary, and the RFC 6455 rules they enforce.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

use super::frame::{self, Utf8Stream, Violation, op};
use super::lane::{Dir, Lane, Pumped};

/// A source that hands out its bytes in fixed-size pieces, then EOF.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.data.len() - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// A client (masked) frame.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let key = [0x11, 0x22, 0x33, 0x44];
    frame::write_head(&mut out, fin, opcode, payload.len(), Some(key));
    let start = out.len();
    out.extend_from_slice(payload);
    frame::apply_mask(&mut out[start..], key, 0);
    out
}

/// A server (unmasked) frame.
fn plain(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_head(&mut out, fin, opcode, payload.len(), None);
    out.extend_from_slice(payload);
    out
}

/// Decoded frames of a byte stream: (fin, opcode, unmasked payload).
fn decode(mut bytes: &[u8], masked: bool) -> Vec<(bool, u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = frame::parse_head(bytes, masked).unwrap().unwrap();
        let end = h.header_len + h.len as usize;
        let mut p = bytes[h.header_len..end].to_vec();
        if let Some(k) = h.mask {
            frame::apply_mask(&mut p, k, 0);
        }
        out.push((h.fin, h.opcode, p));
        bytes = &bytes[end..];
    }
    out
}

/// Runs a lane over `input` read `chunk` bytes at a time; returns what it
/// wrote and the event that ended it.
fn run(dir: Dir, input: &[u8], chunk: usize, max: usize) -> (Vec<u8>, Pumped) {
    let mut lane = Lane::new(dir, max, 1024);
    let mut src = Chunked {
        data: input.to_vec(),
        pos: 0,
        chunk,
    };
    let mut sink = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        match lane.pump(&mut cx, &mut src, &mut sink) {
            Pumped::Yield => continue,
            other => return (sink, other),
        }
    }
}

#[test]
fn agent_frames_are_remasked_and_fragments_kept_in_order() {
    let mut input = masked(false, op::TEXT, b"hel");
    input.extend(masked(true, op::PING, b"ping!"));
    input.extend(masked(false, op::CONTINUATION, "lo wö".as_bytes()));
    input.extend(masked(true, op::CONTINUATION, b"rld"));
    input.extend(masked(true, op::BINARY, &[0, 1, 2, 255]));
    for chunk in 1..input.len() {
        let (out, end) = run(Dir::Up, &input, chunk, 1 << 20);
        assert!(matches!(end, Pumped::SourceGone), "chunk {chunk}: {end:?}");
        let frames = decode(&out, true);
        let want: Vec<(bool, u8, Vec<u8>)> = vec![
            (false, op::TEXT, b"hel".to_vec()),
            (true, op::PING, b"ping!".to_vec()),
            (false, op::CONTINUATION, "lo wö".as_bytes().to_vec()),
            (true, op::CONTINUATION, b"rld".to_vec()),
            (true, op::BINARY, vec![0, 1, 2, 255]),
        ];
        assert_eq!(frames, want, "chunk {chunk}");
        // Fresh masking keys, not the agent's.
        assert_ne!(out[2..6], input[2..6]);
    }
}

#[test]
fn upstream_frames_pass_unchanged() {
    let mut input = plain(true, op::TEXT, "ünïcödé".as_bytes());
    input.extend(plain(true, op::BINARY, &vec![7u8; 70_000]));
    input.extend(plain(true, op::PONG, b""));
    for chunk in [1, 3, 100, 4096, 100_000] {
        let (out, _) = run(Dir::Down, &input, chunk, 1 << 20);
        assert_eq!(out, input, "chunk {chunk}");
    }
}

fn violation(dir: Dir, input: &[u8]) -> Violation {
    for chunk in [1, 2, 7, input.len().max(1)] {
        if let (_, Pumped::Violation(v)) = run(dir, input, chunk, 1024) {
            return v;
        }
    }
    panic!("no violation for {input:?}");
}

#[test]
fn rule_breaking_frames_are_caught() {
    assert_eq!(violation(Dir::Up, &plain(true, op::TEXT, b"x")), Violation::Masking);
    assert_eq!(violation(Dir::Down, &masked(true, op::TEXT, b"x")), Violation::Masking);
    assert_eq!(
        violation(Dir::Up, &masked(true, op::CONTINUATION, b"x")),
        Violation::BadFragmentation
    );
    let mut two_starts = masked(false, op::TEXT, b"a");
    two_starts.extend(masked(true, op::TEXT, b"b"));
    assert_eq!(violation(Dir::Up, &two_starts), Violation::BadFragmentation);
    assert_eq!(
        violation(Dir::Up, &masked(false, op::PING, b"")),
        Violation::BadControlFrame
    );
    assert_eq!(
        violation(Dir::Up, &masked(true, op::PING, &[0; 126])),
        Violation::BadControlFrame
    );
    assert_eq!(violation(Dir::Up, &masked(true, 0x3, b"")), Violation::UnknownOpcode(3));
    let mut rsv = masked(true, op::TEXT, b"x");
    rsv[0] |= 0x40;
    assert_eq!(violation(Dir::Up, &rsv), Violation::ReservedBits);
    assert_eq!(
        violation(Dir::Up, &masked(true, op::BINARY, &[0; 2000])),
        Violation::TooLarge
    );
    let mut big = masked(false, op::BINARY, &[0; 600]);
    big.extend(masked(true, op::CONTINUATION, &[0; 600]));
    assert_eq!(violation(Dir::Up, &big), Violation::TooLarge);
}

#[test]
fn invalid_utf8_is_caught_even_across_fragments() {
    assert_eq!(
        violation(Dir::Up, &masked(true, op::TEXT, &[0xC3, 0x28])),
        Violation::InvalidUtf8
    );
    // "é" split across two fragments is fine...
    let mut ok = masked(false, op::TEXT, &[b'a', 0xC3]);
    ok.extend(masked(true, op::CONTINUATION, &[0xA9, b'b']));
    let (out, end) = run(Dir::Up, &ok, 1, 1024);
    assert!(matches!(end, Pumped::SourceGone));
    assert_eq!(decode(&out, true).len(), 2);
    // ...but a message ending inside a character is not.
    assert_eq!(
        violation(Dir::Up, &masked(true, op::TEXT, &[b'a', 0xE2, 0x82])),
        Violation::InvalidUtf8
    );
    // Binary is not checked.
    let (_, end) = run(Dir::Up, &masked(true, op::BINARY, &[0xFF, 0xFE]), 1, 1024);
    assert!(matches!(end, Pumped::SourceGone));
}

#[test]
fn close_frames_are_checked_and_end_the_source() {
    let mut input = masked(true, op::CLOSE, &frame::close_payload(4001, "bye"));
    input.extend(masked(true, op::TEXT, b"after close"));
    let (out, end) = run(Dir::Up, &input, 3, 1024);
    assert!(matches!(end, Pumped::Closed), "{end:?}");
    let frames = decode(&out, true);
    assert_eq!(frames.len(), 1, "nothing after a close is forwarded");
    assert_eq!(frames[0].2, frame::close_payload(4001, "bye"));
    assert_eq!(violation(Dir::Up, &masked(true, op::CLOSE, &[3])), Violation::BadClose);
    assert_eq!(
        violation(Dir::Up, &masked(true, op::CLOSE, &frame::close_payload(1005, ""))),
        Violation::BadClose
    );
    assert_eq!(
        violation(Dir::Up, &masked(true, op::CLOSE, &[0x03, 0xE8, 0xFF])),
        Violation::InvalidUtf8
    );
}

#[test]
fn close_1014_from_upstream_reaches_the_agent_as_1011() {
    let (out, end) = run(
        Dir::Down,
        &plain(true, op::CLOSE, &frame::close_payload(1014, "bad gateway")),
        64,
        1024,
    );
    assert!(matches!(end, Pumped::Closed));
    assert_eq!(decode(&out, false)[0].2, frame::close_payload(1011, "bad gateway"));
}

#[test]
fn keepalive_pong_is_swallowed() {
    let mut lane = Lane::new(Dir::Up, 1024, 1024);
    lane.expect_pong = Some(*b"agentmux");
    let mut input = masked(true, op::PONG, b"agentmux");
    input.extend(masked(true, op::TEXT, b"hi"));
    let mut src = Chunked {
        data: input,
        pos: 0,
        chunk: 5,
    };
    let mut sink = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while !matches!(lane.pump(&mut cx, &mut src, &mut sink), Pumped::SourceGone) {}
    assert_eq!(decode(&sink, true), vec![(true, op::TEXT, b"hi".to_vec())]);
    assert_eq!(lane.expect_pong, None);
}

#[test]
fn close_codes_follow_the_registry() {
    for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
        assert!(frame::close_code_allowed(ok), "{ok}");
    }
    for bad in [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
        assert!(!frame::close_code_allowed(bad), "{bad}");
    }
}

#[test]
fn mask_phases_line_up() {
    let key = [1, 2, 3, 4];
    let mut whole: Vec<u8> = (0..37).collect();
    let mut parts = whole.clone();
    frame::apply_mask(&mut whole, key, 0);
    let (a, b) = parts.split_at_mut(5);
    frame::apply_mask(a, key, 0);
    frame::apply_mask(b, key, 5);
    assert_eq!(whole, parts);
}

proptest! {
    #[test]
    fn utf8_stream_agrees_with_std(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6), junk in any::<Option<(usize, u8)>>()) {
        let mut bytes = text.into_bytes();
        if let Some((at, b)) = junk && !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        let want = std::str::from_utf8(&bytes).is_ok();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut s = Utf8Stream::default();
        let mut prev = 0;
        let mut ok = true;
        for c in cuts.into_iter().chain([bytes.len()]) {
            ok &= s.feed(&bytes[prev..c]).is_ok();
            prev = c;
        }
        ok &= s.finish().is_ok();
        prop_assert_eq!(ok, want);
    }

    #[test]
    fn any_split_gives_the_same_frames(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6), chunk in 1usize..64) {
        let mut input = Vec::new();
        for p in &payloads {
            input.extend(masked(true, op::BINARY, p));
        }
        let (out, end) = run(Dir::Up, &input, chunk, 1 << 20);
        prop_assert!(matches!(end, Pumped::SourceGone));
        let got: Vec<Vec<u8>> = decode(&out, true).into_iter().map(|f| f.2).collect();
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50, up in any::<bool>()) {
        let dir = if up { Dir::Up } else { Dir::Down };
        let _ = run(dir, &bytes, chunk, 1024);
    }
}

#[test]
fn a_close_after_the_gateway_sent_its_own_is_not_forwarded() {
    let mut lane = Lane::new(Dir::Down, 1024, 1024);
    lane.send_close(1001, "gateway shutting down");
    let mut src = Chunked {
        data: plain(true, op::CLOSE, &frame::close_payload(1000, "bye")),
        pos: 0,
        chunk: 64,
    };
    let mut sink = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let end = loop {
        match lane.pump(&mut cx, &mut src, &mut sink) {
            Pumped::Yield => continue,
            other => break other,
        }
    };
    assert!(matches!(end, Pumped::Closed), "{end:?}");
    let frames = decode(&sink, false);
    assert_eq!(frames.len(), 1, "one close frame only");
    assert_eq!(frames[0].2, frame::close_payload(1001, "gateway shutting down"));
}

/// A throttled agent is read again when its wait is over, even when
/// nothing else happens on the session meanwhile: the relay must have
/// registered the throttle's timer before it went to sleep. (It once did
/// not, and a flood with a quiet upstream hung until the upstream spoke.)
#[tokio::test(start_paused = true)]
async fn a_throttled_agent_is_read_again_when_its_wait_is_over() {
    use std::sync::Arc;
    use std::time::Duration;

    use agentmux_filters::NoopMetrics;
    use agentmux_filters::rate_limit::{LimitKey, MessageLimitParams, MessageLimiter};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::relay::{Relay, RelayParams};
    use crate::session::drain::Drain;

    let (agent_end, mut agent) = tokio::io::duplex(1 << 16);
    let (upstream_end, mut upstream) = tokio::io::duplex(1 << 16);
    // Two messages in the burst, then one every 100 ms.
    let params = MessageLimitParams::new(10.0, 2, 1000.0, 1000, Duration::from_secs(1)).unwrap();
    let gate = MessageLimiter::new(params, Arc::new(NoopMetrics)).session(LimitKey::from_bytes(b"agent"));
    let relay = Relay::new(
        agent_end,
        upstream_end,
        RelayParams {
            max_message: 1 << 16,
            read_size: 4096,
            keepalive: None,
        },
        (&[], &[]),
        Arc::new(Drain::default()).watch(),
    )
    .with_messages(Some(gate));
    let _relay = tokio::spawn(relay);

    let start = tokio::time::Instant::now();
    let mut flood = Vec::new();
    for p in [b"a", b"b", b"c", b"d"] {
        flood.extend(masked(true, op::TEXT, p));
    }
    agent.write_all(&flood).await.unwrap();
    // The upstream never answers, so only the throttle's timer can wake
    // the relay for the last two messages.
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while decode_complete(&got) < 4 {
        let n = tokio::time::timeout(Duration::from_secs(10), upstream.read(&mut buf))
            .await
            .expect("the throttled messages never came")
            .unwrap();
        assert!(n > 0, "the relay closed the upstream");
        got.extend_from_slice(&buf[..n]);
    }
    let payloads: Vec<Vec<u8>> = decode(&got, true).into_iter().map(|f| f.2).collect();
    assert_eq!(payloads, [b"a", b"b", b"c", b"d"].map(|p| p.to_vec()));
    // Held back, not dropped: the fourth message waited two periods.
    assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
}

/// How many whole frames `bytes` holds.
fn decode_complete(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Some(h)) = frame::parse_head(bytes, true) {
        let end = h.header_len + h.len as usize;
        if bytes.len() < end {
            break;
        }
        n += 1;
        bytes = &bytes[end..];
    }
    n
}
