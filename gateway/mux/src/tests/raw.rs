//! A bare protocol peer for tests: sends any bytes as mux messages and
//! reads back decoded frames, with no session logic of its own.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame as WsFrame, OpCode, Payload, WebSocket};
use http::{Request, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;

/// What came back from the server.
#[derive(Debug)]
pub(super) enum Incoming {
    Frames(Vec<Frame>),
    Close(u16),
    Eof,
}

pub(super) struct RawPeer {
    ws: WebSocket<TokioIo<Upgraded>>,
    /// Frames received but not yet looked at.
    pending: std::collections::VecDeque<Frame>,
}

impl RawPeer {
    /// Connects to `server` offering `protocol`.
    pub(super) async fn try_connect(
        server: &MuxServer,
        protocol: &str,
    ) -> (
        Result<RawPeer, fastwebsockets::WebSocketError>,
        Result<MuxConnection, server::AcceptError>,
    ) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let srv = server.clone();
        let accept = tokio::spawn(async move { srv.accept(b).await });
        let req = Request::get("/mux")
            .header(header::HOST, "upstream.test")
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "upgrade")
            .header(header::SEC_WEBSOCKET_KEY, fastwebsockets::handshake::generate_key())
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let peer = fastwebsockets::handshake::client(&TokioExecutor::new(), req, a)
            .await
            .map(|(mut ws, _)| {
                // Report the server's close instead of answering it: the
                // server drops the transport right after a fatal close.
                ws.set_auto_close(false);
                RawPeer {
                    ws,
                    pending: Default::default(),
                }
            });
        (peer, accept.await.unwrap())
    }

    pub(super) async fn connect(server: &MuxServer) -> (RawPeer, MuxConnection) {
        let (peer, conn) = Self::try_connect(server, PROTOCOL).await;
        (peer.unwrap(), conn.unwrap())
    }

    /// The other way round: a bare *upstream* that `client` connects to,
    /// to provoke what a correct upstream never sends (or never answers).
    pub(super) async fn upstream_for(client: &MuxClient) -> (RawPeer, MuxClientConnection) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let (mut resp, fut) = fastwebsockets::upgrade::upgrade(&mut req).unwrap();
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, http::HeaderValue::from_static(PROTOCOL));
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(fut);
            }
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(b), service)
                .with_upgrades(),
        );
        let conn = client.connect(a, "upstream.test", "/mux").await.unwrap();
        let mut ws = rx.await.unwrap().await.unwrap();
        ws.set_auto_close(false);
        let peer = RawPeer {
            ws,
            pending: Default::default(),
        };
        (peer, conn)
    }

    /// As upstream: waits for the OPEN of a session and returns its id.
    pub(super) async fn expect_open(&mut self) -> u64 {
        match self.expect(|f| matches!(f, Frame::Open { .. })).await {
            Frame::Open { session, .. } => session,
            _ => unreachable!(),
        }
    }

    /// Sends `frames` as one message.
    pub(super) async fn send(&mut self, frames: &[Frame]) {
        let mut batch = Batch::new();
        for f in frames {
            batch.push(f).unwrap();
        }
        self.send_bytes(batch.take()).await;
    }

    pub(super) async fn send_bytes(&mut self, bytes: BytesMut) {
        let frame = WsFrame::binary(Payload::Bytes(bytes));
        self.ws.write_frame(frame).await.unwrap();
    }

    pub(super) async fn send_ws(&mut self, frame: WsFrame<'_>) {
        self.ws.write_frame(frame).await.unwrap();
    }

    /// The next message, close or end (bounded wait).
    pub(super) async fn recv(&mut self) -> Incoming {
        let read = async {
            loop {
                let frame = match self.ws.read_frame().await {
                    Ok(f) => f,
                    Err(_) => return Incoming::Eof,
                };
                match frame.opcode {
                    OpCode::Binary => {
                        let bytes = Bytes::from(Vec::from(frame.payload));
                        return Incoming::Frames(decode_message(bytes).unwrap());
                    }
                    OpCode::Close => {
                        let code = frame
                            .payload
                            .get(..2)
                            .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                        return Incoming::Close(code);
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("server answered nothing")
    }

    /// Reads until a frame matching `want` arrives, returning it.
    pub(super) async fn expect(&mut self, want: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            while let Some(f) = self.pending.pop_front() {
                if want(&f) {
                    return f;
                }
            }
            match self.recv().await {
                Incoming::Frames(frames) => self.pending.extend(frames),
                other => panic!("connection ended while waiting: {other:?}"),
            }
        }
    }

    /// Reads until the connection closes; returns the frames seen and the
    /// close code.
    pub(super) async fn until_close(&mut self) -> (Vec<Frame>, Option<u16>) {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                Incoming::Frames(frames) => seen.extend(frames),
                Incoming::Close(code) => return (seen, Some(code)),
                Incoming::Eof => return (seen, None),
            }
        }
    }

    /// Opens session `id` and waits for OPEN_OK.
    pub(super) async fn open(&mut self, id: u64, window: u32) {
        self.send(&[Frame::Open {
            session: id,
            open: Box::new(open_request(window)),
        }])
        .await;
        self.expect(|f| matches!(f, Frame::OpenOk { session, .. } if *session == id))
            .await;
    }
}

pub(super) fn data(session: u64, seq: u64, payload: &'static [u8]) -> Frame {
    Frame::Data {
        session,
        seq,
        text: false,
        fin: true,
        payload: Bytes::from_static(payload),
    }
}

pub(super) fn is_error(frame: &Frame, id: u64, want: ErrorCode) -> bool {
    matches!(frame, Frame::Error { session, code, .. } if *session == id && *code == want)
}

/// `n` empty DATA frames (each an empty message) for `session` from
/// sequence `from`, in messages as full as the protocol allows.
pub(super) fn empty_frames(session: u64, from: u64, n: u64) -> Vec<Vec<Frame>> {
    let frames: Vec<Frame> = (from..from + n).map(|seq| data(session, seq, b"")).collect();
    frames.chunks(MAX_FRAMES_PER_MESSAGE).map(<[Frame]>::to_vec).collect()
}
