//! RFC 6455 frame headers, close payloads and streaming UTF-8 checks: the
//! pieces of the protocol the relay needs to parse and to enforce.

/// Opcodes (RFC 6455 §5.2).
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    /// The masking key, when the frame is masked.
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) len: u64,
    /// Bytes the header occupies (2 to 14).
    pub(crate) header_len: usize,
}

impl Head {
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A broken rule of RFC 6455, with the close code it earns the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// RSV bits set without a negotiated extension.
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A client frame without a mask, or a server frame with one.
    Masking,
    /// A control frame with FIN clear or a payload over 125 bytes.
    BadControlFrame,
    /// A continuation with no message started, or a new message before the
    /// last one ended.
    BadFragmentation,
    /// A 64-bit length with the top bit set.
    BadLength,
    /// A close frame with a one-byte payload or a code not allowed on the
    /// wire.
    BadClose,
    /// Text that is not UTF-8 (or a close reason that is not).
    InvalidUtf8,
    /// A message over the route's `max_message_bytes`.
    TooLarge,
}

impl Violation {
    /// The close code for the side that broke the rule.
    pub(crate) fn close_code(self) -> u16 {
        use crate::error::close::{INVALID_DATA, PROTOCOL_ERROR, TOO_BIG};
        match self {
            Self::InvalidUtf8 => INVALID_DATA,
            Self::TooLarge => TOO_BIG,
            Self::ReservedBits
            | Self::UnknownOpcode(_)
            | Self::Masking
            | Self::BadControlFrame
            | Self::BadFragmentation
            | Self::BadLength
            | Self::BadClose => PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::UnknownOpcode(_) => "unknown opcode",
            Self::Masking => "wrong masking",
            Self::BadControlFrame => "malformed control frame",
            Self::BadFragmentation => "bad fragmentation",
            Self::BadLength => "bad frame length",
            Self::BadClose => "malformed close frame",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::TooLarge => "message too large",
        }
    }
}

/// Parses a header from the start of `buf`; `None` until all of it is
/// there. `masked` says whether the peer must mask (agents) or must not
/// (upstreams).
pub(crate) fn parse_head(buf: &[u8], masked: bool) -> Result<Option<Head>, Violation> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(Violation::ReservedBits);
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(Violation::UnknownOpcode(opcode));
    }
    let fin = b0 & 0x80 != 0;
    if (b1 & 0x80 != 0) != masked {
        return Err(Violation::Masking);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(Violation::BadLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x8 != 0;
    if control && (!fin || len > 125) {
        return Err(Violation::BadControlFrame);
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        len,
        header_len: at,
    }))
}

/// Writes a header (as a server, unmasked, or as a client with `mask`).
pub(crate) fn write_head(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// Appends a whole control frame (close, ping) built by the gateway.
pub(crate) fn write_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let payload = &payload[..payload.len().min(125)];
    write_head(out, true, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k, 0);
    }
}

/// A close frame payload: code plus a reason cut to fit 125 bytes on a
/// character boundary.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// XORs `buf` with `key` starting at key phase `phase` (bytes already
/// masked before `buf` in this payload, mod 4). Works a word at a time.
pub(crate) fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let mut k = [0u8; 4];
    for (i, b) in k.iter_mut().enumerate() {
        *b = key[(phase + i) % 4];
    }
    let word = u32::from_ne_bytes(k);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i];
    }
}

/// Whether a close code may appear in a close frame (RFC 6455 §7.4 and the
/// IANA registry): 1000–1003, 1007–1014, 3000–4999.
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close frame's (unmasked) payload.
pub(crate) fn check_close(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::BadClose),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_allowed(code) {
                return Err(Violation::BadClose);
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Validates UTF-8 that arrives in pieces (a text message split across
/// frames and reads), keeping at most three bytes of an unfinished
/// character between pieces.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: [u8; 4],
    len: u8,
}

impl Utf8Stream {
    /// Checks the next piece.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        if self.len > 0 {
            let need = match self.pending[0] {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Err(Violation::InvalidUtf8),
            };
            let have = usize::from(self.len);
            let take = (need - have).min(bytes.len());
            self.pending[have..have + take].copy_from_slice(&bytes[..take]);
            self.len += take as u8;
            bytes = &bytes[take..];
            let now = usize::from(self.len);
            if now < need {
                // Still unfinished: the prefix so far must be valid.
                return match std::str::from_utf8(&self.pending[..now]) {
                    Err(e) if e.error_len().is_some() => Err(Violation::InvalidUtf8),
                    _ => Ok(()),
                };
            }
            std::str::from_utf8(&self.pending[..need]).map_err(|_| Violation::InvalidUtf8)?;
            self.len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a character.
    pub(crate) fn finish(&mut self) -> Result<(), Violation> {
        let ok = self.len == 0;
        self.len = 0;
        if ok { Ok(()) } else { Err(Violation::InvalidUtf8) }
    }
}
