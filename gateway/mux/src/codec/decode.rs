//! The decoder: one received WebSocket message in, frames out.

use bytes::{Buf, Bytes};
use http::{HeaderName, HeaderValue};

use super::{DecodeError, check};
use crate::frame::{
    ErrorCode, FLAG_FIN, FLAG_PARTIAL, FLAG_TEXT, Frame, FrameType, HEADER_LEN, MAX_FRAME_PAYLOAD,
    MAX_FRAMES_PER_MESSAGE, MAX_MESSAGE_LEN, MAX_OPEN_HEADERS, MAX_SUBPROTOCOLS, Open, PartialMessage, TakeoverOk,
};

/// Walks the frames of one message. Yields each frame or the first error,
/// then nothing more: after an error the rest of the message is untrusted.
#[derive(Debug)]
pub struct Decoder {
    rest: Bytes,
    frames: usize,
    done: bool,
}

impl Decoder {
    /// A decoder over `message` (the payload of one binary WebSocket
    /// message). DATA payloads it yields share `message`'s memory.
    pub fn new(message: Bytes) -> Self {
        Self {
            rest: message,
            frames: 0,
            done: false,
        }
    }

    fn next_frame(&mut self) -> Result<Frame, DecodeError> {
        if self.frames == 0 {
            if self.rest.is_empty() {
                return Err(DecodeError::EmptyMessage);
            }
            if self.rest.len() > MAX_MESSAGE_LEN {
                return Err(DecodeError::MessageTooLarge { len: self.rest.len() });
            }
        }
        if self.frames == MAX_FRAMES_PER_MESSAGE {
            return Err(DecodeError::TooManyFrames);
        }
        let frame = decode_frame(&mut self.rest)?;
        self.frames += 1;
        Ok(frame)
    }
}

impl Iterator for Decoder {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || (self.frames > 0 && self.rest.is_empty()) {
            return None;
        }
        let item = self.next_frame();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

/// Decodes every frame of `message`, or refuses the whole message.
pub fn decode_message(message: Bytes) -> Result<Vec<Frame>, DecodeError> {
    Decoder::new(message).collect()
}

/// The fixed header of a frame.
struct Header {
    frame_type: FrameType,
    flags: u8,
    session: u64,
    seq: u64,
}

fn decode_frame(rest: &mut Bytes) -> Result<Frame, DecodeError> {
    if rest.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: rest.len(),
        });
    }
    let type_byte = rest.get_u8();
    let frame_type = FrameType::from_u8(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
    let header = Header {
        frame_type,
        flags: rest.get_u8(),
        session: rest.get_u64(),
        seq: rest.get_u64(),
    };
    let allowed = match frame_type {
        FrameType::Data => FLAG_FIN | FLAG_TEXT,
        FrameType::TakeoverOk => FLAG_PARTIAL | FLAG_TEXT,
        _ => 0,
    };
    // TEXT on TAKEOVER_OK describes the partial message: not without one.
    let orphan_text = frame_type == FrameType::TakeoverOk && header.flags & (FLAG_PARTIAL | FLAG_TEXT) == FLAG_TEXT;
    if header.flags & !allowed != 0 || orphan_text {
        return Err(DecodeError::BadFlags {
            frame_type,
            flags: header.flags,
        });
    }
    let len = usize::try_from(rest.get_u32()).unwrap_or(usize::MAX);
    if len > MAX_FRAME_PAYLOAD {
        return Err(DecodeError::FrameTooLarge { len });
    }
    if rest.len() < len {
        return Err(DecodeError::Truncated {
            needed: len,
            available: rest.len(),
        });
    }
    let payload = rest.split_to(len);
    let frame = parse(header, payload)?;
    check::check(&frame)?;
    Ok(frame)
}

fn parse(h: Header, payload: Bytes) -> Result<Frame, DecodeError> {
    let session = h.session;
    // Only DATA, CLOSE, ACK, RESUME, TAKEOVER and TAKEOVER_OK use the
    // sequence field.
    let sequenced = matches!(
        h.frame_type,
        FrameType::Data
            | FrameType::Close
            | FrameType::Ack
            | FrameType::Resume
            | FrameType::Takeover
            | FrameType::TakeoverOk
    );
    if !sequenced && h.seq != 0 {
        return Err(super::FrameError::BadSequence {
            frame_type: h.frame_type,
            seq: h.seq,
        }
        .into());
    }
    let mut p = Fields::new(h.frame_type, payload);
    let frame = match h.frame_type {
        FrameType::Data => Frame::Data {
            session,
            seq: h.seq,
            text: h.flags & FLAG_TEXT != 0,
            fin: h.flags & FLAG_FIN != 0,
            payload: std::mem::take(&mut p.rest),
        },
        FrameType::Open => Frame::Open {
            session,
            open: Box::new(parse_open(&mut p)?),
        },
        FrameType::OpenOk => {
            let window = p.u32()?;
            let subprotocol = p.str16("subprotocol is not UTF-8")?;
            Frame::OpenOk {
                session,
                window,
                subprotocol: (!subprotocol.is_empty()).then_some(subprotocol),
            }
        }
        FrameType::Ack => Frame::Ack { session, seq: h.seq },
        FrameType::Window => Frame::Window {
            session,
            limit: p.u64()?,
        },
        FrameType::Resume => Frame::Resume {
            session,
            last_seq: h.seq,
            limit: p.u64()?,
        },
        FrameType::Close => Frame::Close {
            session,
            seq: h.seq,
            code: p.u16()?,
            reason: p.utf8_rest("close reason is not UTF-8")?,
        },
        FrameType::Error => parse_error(session, &mut p)?,
        FrameType::Takeover => Frame::Takeover {
            session,
            messages: h.seq,
            window: p.u32()?,
        },
        FrameType::TakeoverOk => parse_takeover_ok(&h, &mut p)?,
    };
    p.finish()?;
    Ok(frame)
}

fn parse_takeover_ok(h: &Header, p: &mut Fields) -> Result<Frame, DecodeError> {
    let received_bytes = p.u64()?;
    let messages = p.u64()?;
    let partial_bytes = p.u64()?;
    let partial = if h.flags & FLAG_PARTIAL != 0 {
        Some(PartialMessage {
            text: h.flags & FLAG_TEXT != 0,
            bytes: partial_bytes,
        })
    } else if partial_bytes != 0 {
        return Err(p.bad("partial bytes without the PARTIAL flag"));
    } else {
        None
    };
    let limit = p.u64()?;
    let replay_seq = p.u64()?;
    let replay_bytes = p.u64()?;
    let granted = p.u64()?;
    let subprotocol = p.str16("subprotocol is not UTF-8")?;
    Ok(Frame::TakeoverOk(Box::new(TakeoverOk {
        session: h.session,
        last_seq: h.seq,
        received_bytes,
        messages,
        partial,
        limit,
        replay_seq,
        replay_bytes,
        granted,
        subprotocol: (!subprotocol.is_empty()).then_some(subprotocol),
    })))
}

fn parse_error(session: u64, p: &mut Fields) -> Result<Frame, DecodeError> {
    let raw = p.u16()?;
    Ok(Frame::Error {
        session,
        code: ErrorCode::from_u16(raw).ok_or(DecodeError::UnknownErrorCode(raw))?,
        message: p.utf8_rest("error message is not UTF-8")?,
    })
}

fn parse_open(p: &mut Fields) -> Result<Open, DecodeError> {
    let window = p.u32()?;
    let route = p.str16("route is not UTF-8")?;
    let identity = p.str16("identity is not UTF-8")?;
    let path = p.str16("path is not UTF-8")?;
    let count = usize::from(p.u16()?);
    if count > MAX_OPEN_HEADERS {
        return Err(p.bad("too many headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = HeaderName::from_bytes(&p.bytes16()?).map_err(|_| p.bad("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(p.bytes16()?).map_err(|_| p.bad("bad header value"))?;
        headers.push((name, value));
    }
    let count = usize::from(p.u16()?);
    if count > MAX_SUBPROTOCOLS {
        return Err(p.bad("too many subprotocols"));
    }
    let mut subprotocols = Vec::with_capacity(count);
    for _ in 0..count {
        subprotocols.push(p.str16("subprotocol is not UTF-8")?);
    }
    Ok(Open {
        window,
        route,
        identity,
        path,
        headers,
        subprotocols,
    })
}

/// A cursor over a frame payload; every read is bounds-checked.
struct Fields {
    frame_type: FrameType,
    rest: Bytes,
}

impl Fields {
    fn new(frame_type: FrameType, rest: Bytes) -> Self {
        Self { frame_type, rest }
    }

    fn bad(&self, what: &'static str) -> DecodeError {
        DecodeError::BadPayload {
            frame_type: self.frame_type,
            what,
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.rest.len() < n {
            return Err(self.bad("payload too short"));
        }
        Ok(())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.rest.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.rest.get_u32())
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.rest.get_u64())
    }

    fn bytes16(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        Ok(self.rest.split_to(len))
    }

    fn str16(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let raw = self.bytes16()?;
        utf8(self.frame_type, what, raw)
    }

    fn utf8_rest(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let raw = std::mem::take(&mut self.rest);
        utf8(self.frame_type, what, raw)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if !self.rest.is_empty() {
            return Err(self.bad("trailing bytes"));
        }
        Ok(())
    }
}

/// `raw` as a string; `what` names the field in the error.
fn utf8(frame_type: FrameType, what: &'static str, raw: Bytes) -> Result<String, DecodeError> {
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadPayload { frame_type, what })
}
