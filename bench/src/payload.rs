//! Self-checking payloads. Every message carries its session id, sequence
//! number and (intended) send time in a header, and a filler derived from
//! those three, so one reply proves order (the sequence is the next one
//! expected) and content (the filler regenerates byte for byte). The send
//! time in the payload lets the reader compute latency without shared state
//! with the writer.
//!
//! Binary payloads use a 24-byte little-endian header and random filler;
//! text payloads a 48-character hex header and alphanumeric filler, so
//! they stay valid UTF-8 even after a corruption fault flips the low bit of
//! one byte.

use crate::cli::PayloadKind;

const BINARY_HEADER: usize = 24;
const TEXT_HEADER: usize = 48;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What a payload's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Session that sent it.
    pub(crate) session: u64,
    /// Position in that session's stream, from 0.
    pub(crate) seq: u64,
    /// Nanoseconds since the run's epoch at which it was (meant to be) sent.
    pub(crate) sent_ns: u64,
}

/// Why a reply failed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// Header unreadable, filler differs, or wrong length: the bytes changed.
    Content,
    /// Intact, but not the message expected next (lost, duplicated or reordered).
    Order,
}

/// The smallest payload that still carries a header.
pub(crate) fn min_size(kind: PayloadKind) -> usize {
    match kind {
        PayloadKind::Binary => BINARY_HEADER,
        PayloadKind::Text => TEXT_HEADER,
    }
}

/// Writes a payload of `size` bytes (at least [`min_size`]) into `buf`.
pub(crate) fn encode(kind: PayloadKind, size: usize, stamp: Stamp, buf: &mut Vec<u8>) {
    buf.clear();
    let size = size.max(min_size(kind));
    match kind {
        PayloadKind::Binary => {
            buf.extend_from_slice(&stamp.session.to_le_bytes());
            buf.extend_from_slice(&stamp.seq.to_le_bytes());
            buf.extend_from_slice(&stamp.sent_ns.to_le_bytes());
        }
        PayloadKind::Text => {
            for field in [stamp.session, stamp.seq, stamp.sent_ns] {
                buf.extend_from_slice(format!("{field:016x}").as_bytes());
            }
        }
    }
    let mut rng = Filler::new(stamp);
    while buf.len() < size {
        let word = rng.next().to_le_bytes();
        let take = (size - buf.len()).min(8);
        match kind {
            PayloadKind::Binary => buf.extend_from_slice(&word[..take]),
            PayloadKind::Text => buf.extend(word[..take].iter().map(|b| ALPHABET[usize::from(b & 63)])),
        }
    }
}

/// Reads the header of a reply and checks its filler and length.
pub(crate) fn decode(kind: PayloadKind, size: usize, bytes: &[u8]) -> Result<Stamp, Mismatch> {
    let size = size.max(min_size(kind));
    if bytes.len() != size {
        return Err(Mismatch::Content);
    }
    let stamp = match kind {
        PayloadKind::Binary => {
            let field = |i: usize| {
                let mut word = [0u8; 8];
                word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                u64::from_le_bytes(word)
            };
            Stamp {
                session: field(0),
                seq: field(1),
                sent_ns: field(2),
            }
        }
        PayloadKind::Text => {
            let field = |i: usize| -> Result<u64, Mismatch> {
                let hex = std::str::from_utf8(&bytes[i * 16..i * 16 + 16]).map_err(|_| Mismatch::Content)?;
                u64::from_str_radix(hex, 16).map_err(|_| Mismatch::Content)
            };
            Stamp {
                session: field(0)?,
                seq: field(1)?,
                sent_ns: field(2)?,
            }
        }
    };
    let mut rng = Filler::new(stamp);
    let mut offset = min_size(kind);
    while offset < size {
        let word = rng.next().to_le_bytes();
        let take = (size - offset).min(8);
        let got = &bytes[offset..offset + take];
        let same = match kind {
            PayloadKind::Binary => got == &word[..take],
            PayloadKind::Text => got
                .iter()
                .zip(&word[..take])
                .all(|(g, w)| *g == ALPHABET[usize::from(w & 63)]),
        };
        if !same {
            return Err(Mismatch::Content);
        }
        offset += take;
    }
    Ok(stamp)
}

/// Checks a reply against the sequence expected next in a session.
pub(crate) struct OrderCheck {
    session: u64,
    next: u64,
}

impl OrderCheck {
    /// Expects `session`'s messages from sequence 0.
    pub(crate) fn new(session: u64) -> Self {
        Self { session, next: 0 }
    }

    /// Expects `session`'s messages from sequence `next` (after a reply
    /// that could not be checked, e.g. an error status).
    pub(crate) fn resume(session: u64, next: u64) -> Self {
        Self { session, next }
    }

    /// Checks one decoded stamp; on a gap it resynchronises after the
    /// received sequence so a single loss counts once, not forever.
    pub(crate) fn check(&mut self, stamp: Stamp) -> Result<(), Mismatch> {
        if stamp.session != self.session {
            return Err(Mismatch::Order);
        }
        let expected = self.next;
        self.next = stamp.seq.wrapping_add(1);
        if stamp.seq == expected {
            Ok(())
        } else {
            Err(Mismatch::Order)
        }
    }
}

/// The SSE token the simulator sends at `seq`; the load generator checks
/// each received token against it.
pub(crate) fn sse_token(seq: u64) -> String {
    let mut rng = Filler(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let word = rng.next().to_le_bytes();
    let text: String = word.iter().map(|b| char::from(ALPHABET[usize::from(b & 63)])).collect();
    format!("tok-{text}")
}

/// xorshift64*: fast, deterministic, good enough to make a flipped byte
/// impossible to miss.
struct Filler(u64);

impl Filler {
    fn new(stamp: Stamp) -> Self {
        let seed = stamp.session.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ stamp.seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ stamp.sent_ns.rotate_left(17);
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            session: 7,
            seq,
            sent_ns: 123_456_789,
        }
    }

    #[test]
    fn round_trip_both_kinds() {
        for kind in [PayloadKind::Binary, PayloadKind::Text] {
            for size in [0, 24, 48, 49, 64, 1000] {
                let mut buf = Vec::new();
                encode(kind, size, stamp(3), &mut buf);
                assert_eq!(buf.len(), size.max(min_size(kind)));
                assert_eq!(decode(kind, size, &buf), Ok(stamp(3)));
                if kind == PayloadKind::Text {
                    assert!(std::str::from_utf8(&buf).is_ok());
                }
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        for kind in [PayloadKind::Binary, PayloadKind::Text] {
            let mut buf = Vec::new();
            encode(kind, 100, stamp(9), &mut buf);
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 1;
                assert!(decode(kind, 100, &bad).is_err(), "{kind:?} flip at {i} missed");
            }
        }
    }

    #[test]
    fn order_check_counts_a_gap_once() {
        let mut check = OrderCheck::new(7);
        assert_eq!(check.check(stamp(0)), Ok(()));
        assert_eq!(check.check(stamp(2)), Err(Mismatch::Order));
        assert_eq!(check.check(stamp(3)), Ok(()));
    }

    #[test]
    fn sse_tokens_are_stable() {
        assert_eq!(sse_token(5), sse_token(5));
        assert_ne!(sse_token(5), sse_token(6));
    }
}
