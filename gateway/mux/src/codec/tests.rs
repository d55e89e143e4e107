//! Codec tests: the worked example of PROTOCOL.md, every refusal, and
//! property tests (round trip of arbitrary frames and batches; arbitrary
//! bytes never panic the decoder).

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;
use crate::frame::{MAX_FRAME_PAYLOAD, Open, PartialMessage, TakeoverOk};

const SESSION: u64 = 0x0000_0001_0000_002a;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn one(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf).unwrap();
    buf.freeze()
}

fn header(t: u8, flags: u8, session: u64, seq: u64, len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(t);
    b.put_u8(flags);
    b.put_u64(session);
    b.put_u64(seq);
    b.put_u32(len);
    b
}

#[test]
fn worked_example_matches_protocol_md() {
    let data = Frame::Data {
        session: SESSION,
        seq: 7,
        text: true,
        fin: true,
        payload: Bytes::from_static(b"hi"),
    };
    let ack = Frame::Ack {
        session: SESSION,
        seq: 3,
    };
    let mut batch = Batch::new();
    batch.push(&data).unwrap();
    batch.push(&ack).unwrap();
    let message = batch.take().freeze();
    let expected = hex("03 03 00 00 00 01 00 00 00 2a 00 00 00 00 00 00 00 07 00 00 00 02 68 69
         04 00 00 00 00 01 00 00 00 2a 00 00 00 00 00 00 00 03 00 00 00 00");
    assert_eq!(&message[..], &expected[..]);
    assert_eq!(message.len(), 46);
    assert_eq!(decode_message(message).unwrap(), vec![data, ack]);

    let close = Frame::Close {
        session: SESSION,
        seq: 8,
        code: 1000,
        reason: "bye".into(),
    };
    let expected = hex("06 00 00 00 00 01 00 00 00 2a 00 00 00 00 00 00 00 08 00 00 00 05 03 e8 62 79 65");
    assert_eq!(&one(&close)[..], &expected[..]);
}

#[test]
fn data_payload_is_a_slice_of_the_message() {
    let frame = Frame::Data {
        session: 1,
        seq: 1,
        text: false,
        fin: true,
        payload: Bytes::from(vec![7u8; 1000]),
    };
    let message = one(&frame);
    let range = message.as_ptr() as usize..message.as_ptr() as usize + message.len();
    let Frame::Data { payload, .. } = decode_message(message.clone()).unwrap().remove(0) else {
        panic!("not data");
    };
    assert!(range.contains(&(payload.as_ptr() as usize)), "payload was copied");
}

#[test]
fn refusals_are_typed() {
    let cases: Vec<(BytesMut, DecodeError)> = vec![
        (BytesMut::new(), DecodeError::EmptyMessage),
        (header(0x0B, 0, 1, 0, 0), DecodeError::UnknownType(0x0B)),
        (header(0x00, 0, 1, 0, 0), DecodeError::UnknownType(0x00)),
        (
            header(0x04, 0x01, 1, 1, 0),
            DecodeError::BadFlags {
                frame_type: FrameType::Ack,
                flags: 1,
            },
        ),
        (
            header(0x03, 0x04, 1, 1, 0),
            DecodeError::BadFlags {
                frame_type: FrameType::Data,
                flags: 4,
            },
        ),
        (
            header(0x03, 0, 1, 1, (MAX_FRAME_PAYLOAD + 1) as u32),
            DecodeError::FrameTooLarge {
                len: MAX_FRAME_PAYLOAD + 1,
            },
        ),
        (
            header(0x03, 0, 1, 1, 5),
            DecodeError::Truncated {
                needed: 5,
                available: 0,
            },
        ),
        (
            header(0x03, 0, 0, 1, 0),
            DecodeError::Invalid(FrameError::ZeroSession {
                frame_type: FrameType::Data,
            }),
        ),
        (
            header(0x03, 0, 1, 0, 0),
            DecodeError::Invalid(FrameError::BadSequence {
                frame_type: FrameType::Data,
                seq: 0,
            }),
        ),
        (
            header(0x05, 0, 1, 0, 4),
            DecodeError::Truncated {
                needed: 4,
                available: 0,
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_message(bytes.freeze()), Err(expected));
    }
}

#[test]
fn payload_layout_errors() {
    // WINDOW with a sequence number.
    let mut b = header(0x05, 0, 1, 9, 8);
    b.put_u64(100);
    assert!(matches!(
        decode_message(b.freeze()),
        Err(DecodeError::Invalid(FrameError::BadSequence { seq: 9, .. }))
    ));
    // WINDOW with trailing bytes.
    let mut b = header(0x05, 0, 1, 0, 9);
    b.put_u64(100);
    b.put_u8(0);
    let err = decode_message(b.freeze()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Protocol);
    // CLOSE with a code that may not be sent, and with bad UTF-8.
    let mut b = header(0x06, 0, 1, 1, 2);
    b.put_u16(1006);
    assert_eq!(
        decode_message(b.freeze()),
        Err(DecodeError::Invalid(FrameError::BadCloseCode(1006)))
    );
    let mut b = header(0x06, 0, 1, 1, 3);
    b.put_u16(1000);
    b.put_u8(0xff);
    assert!(matches!(
        decode_message(b.freeze()),
        Err(DecodeError::BadPayload { .. })
    ));
    // ERROR with an unknown code.
    let mut b = header(0x08, 0, 0, 0, 2);
    b.put_u16(999);
    assert_eq!(decode_message(b.freeze()), Err(DecodeError::UnknownErrorCode(999)));
}

#[test]
fn one_bad_frame_refuses_the_whole_message() {
    let mut message = BytesMut::from(&one(&Frame::Ack { session: 1, seq: 1 })[..]);
    message.extend_from_slice(&header(0x42, 0, 1, 0, 0));
    let mut decoder = Decoder::new(message.freeze());
    assert!(decoder.next().unwrap().is_ok());
    assert_eq!(decoder.next(), Some(Err(DecodeError::UnknownType(0x42))));
    assert_eq!(decoder.next(), None);
}

#[test]
fn too_many_frames() {
    let mut batch = Batch::new();
    let ack = Frame::Ack { session: 1, seq: 1 };
    while batch.fits(&ack) {
        batch.push(&ack).unwrap();
    }
    assert_eq!(batch.frame_count(), MAX_FRAMES_PER_MESSAGE);
    let mut message = batch.take();
    assert_eq!(decode_message(message.clone().freeze()).unwrap().len(), 1024);
    encode(&ack, &mut message).unwrap();
    assert_eq!(decode_message(message.freeze()), Err(DecodeError::TooManyFrames));
}

#[test]
fn encode_refuses_what_decode_would() {
    let mut buf = BytesMut::new();
    let big = Frame::Data {
        session: 1,
        seq: 1,
        text: false,
        fin: true,
        payload: Bytes::from(vec![0; MAX_FRAME_PAYLOAD + 1]),
    };
    assert_eq!(encode(&big, &mut buf).unwrap_err().code(), ErrorCode::FrameTooLarge);
    let zero = Frame::Window { session: 0, limit: 1 };
    assert!(encode(&zero, &mut buf).is_err());
    let close = Frame::Close {
        session: 1,
        seq: 1,
        code: 1000,
        reason: "x".repeat(124),
    };
    assert!(encode(&close, &mut buf).is_err());
    assert!(buf.is_empty(), "a refused frame writes nothing");
}

#[test]
fn error_codes_round_trip_and_map_to_close_codes() {
    for v in 0..=20u16 {
        if let Some(code) = ErrorCode::from_u16(v) {
            assert_eq!(code as u16, v);
            assert!(crate::is_valid_close_code(code.close_code()));
        }
    }
    assert_eq!(ErrorCode::from_u16(0), None);
    assert_eq!(ErrorCode::from_u16(15), None);
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ./_-]{0,40}"
}

fn open() -> impl Strategy<Value = Open> {
    let header = ("[a-z][a-z0-9-]{0,15}", "[ -~]{0,30}").prop_map(|(n, v)| {
        (
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v.trim()).unwrap(),
        )
    });
    (
        any::<u32>(),
        text(),
        text(),
        text(),
        prop::collection::vec(header, 0..8),
        prop::collection::vec("[a-z0-9.]{1,12}", 0..4),
    )
        .prop_map(|(window, route, identity, path, headers, subprotocols)| Open {
            window,
            route,
            identity,
            path,
            headers,
            subprotocols,
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    let session = 1..u64::MAX;
    let seq = 1..u64::MAX;
    let close_code = prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999];
    let error_code = (1u16..=14).prop_map(|c| ErrorCode::from_u16(c).unwrap());
    prop_oneof![
        (session.clone(), open()).prop_map(|(session, o)| Frame::Open {
            session,
            open: Box::new(o)
        }),
        (session.clone(), any::<u32>(), prop::option::of("[a-z.]{1,10}")).prop_map(|(session, window, subprotocol)| {
            Frame::OpenOk {
                session,
                window,
                subprotocol,
            }
        }),
        (
            session.clone(),
            seq.clone(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(session, seq, text, fin, p)| Frame::Data {
                session,
                seq,
                text,
                fin,
                payload: Bytes::from(p)
            }),
        (session.clone(), any::<u64>()).prop_map(|(session, seq)| Frame::Ack { session, seq }),
        (session.clone(), any::<u64>()).prop_map(|(session, limit)| Frame::Window { session, limit }),
        (session.clone(), seq, close_code, "[a-z ]{0,40}").prop_map(|(session, seq, code, reason)| {
            Frame::Close {
                session,
                seq,
                code,
                reason,
            }
        }),
        (session.clone(), any::<u64>(), any::<u64>()).prop_map(|(session, last_seq, limit)| {
            Frame::Resume {
                session,
                last_seq,
                limit,
            }
        }),
        (0..u64::MAX, error_code, text()).prop_map(|(session, code, message)| Frame::Error { session, code, message }),
        (session.clone(), any::<u64>(), any::<u32>()).prop_map(|(session, messages, window)| Frame::Takeover {
            session,
            messages,
            window
        }),
        (
            session,
            prop::array::uniform4(any::<u64>()),
            prop::array::uniform4(any::<u64>()),
            prop::option::of((any::<bool>(), any::<u64>()).prop_map(|(text, bytes)| PartialMessage { text, bytes })),
            prop::option::of("[a-z.]{1,10}")
        )
            .prop_map(|(session, a, b, partial, subprotocol)| {
                Frame::TakeoverOk(Box::new(TakeoverOk {
                    session,
                    last_seq: a[0],
                    received_bytes: a[1],
                    messages: a[2],
                    partial,
                    limit: a[3],
                    replay_seq: b[0],
                    replay_bytes: b[1],
                    granted: b[2],
                    subprotocol,
                }))
            }),
    ]
}

proptest! {
    #[test]
    fn round_trip_single(f in frame()) {
        let bytes = one(&f);
        prop_assert_eq!(bytes.len(), encoded_len(&f));
        prop_assert_eq!(decode_message(bytes).unwrap(), vec![f]);
    }

    #[test]
    fn round_trip_batch(frames in prop::collection::vec(frame(), 1..40)) {
        let mut batch = Batch::new();
        for f in &frames {
            prop_assert!(batch.fits(f));
            batch.push(f).unwrap();
        }
        prop_assert_eq!(batch.frame_count(), frames.len());
        prop_assert_eq!(decode_message(batch.take().freeze()).unwrap(), frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for item in Decoder::new(Bytes::from(bytes)) {
            if let Err(e) = item {
                let _ = e.code();
            }
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        frames in prop::collection::vec(frame(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut batch = Batch::new();
        for f in &frames {
            batch.push(f).unwrap();
        }
        let mut bytes = batch.take();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        let decoded: Vec<_> = Decoder::new(bytes.freeze()).collect();
        // Whatever decodes must encode back to a frame the decoder accepts.
        for f in decoded.into_iter().flatten() {
            prop_assert_eq!(decode_message(one(&f)).unwrap(), vec![f]);
        }
    }
}
