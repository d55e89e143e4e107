//! A TCP relay adding latency in each direction, to stand in for a far
//! upstream on a machine without `netem`. Bytes are stamped when read and
//! written when their due time comes, so the relay adds latency without
//! limiting throughput. With the connect delay on (the default), a new
//! connection waits one round trip (up + down) before the relay connects
//! onward, as a TCP handshake to a far host would; that is the cost a warm
//! pool saves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::error::Error;

/// A bound relay.
pub(crate) struct Relay {
    listener: TcpListener,
    to: SocketAddr,
    up: Duration,
    down: Duration,
    connect_delay: bool,
}

impl Relay {
    /// Binds `listen`, relaying to `to`.
    pub(crate) async fn bind(
        listen: &str,
        to: &str,
        up: Duration,
        down: Duration,
        connect_delay: bool,
    ) -> Result<Self, Error> {
        let to = tokio::net::lookup_host(to)
            .await
            .map_err(|e| Error::io(format!("resolving {to}"), e))?
            .next()
            .ok_or_else(|| Error::Usage(format!("{to} resolves to no address")))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding {listen}"), e))?;
        Ok(Self {
            listener,
            to,
            up,
            down,
            connect_delay,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))
    }

    /// Relays until the task is dropped.
    pub(crate) async fn run(self) {
        loop {
            let Ok((client, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let (to, up, down, connect_delay) = (self.to, self.up, self.down, self.connect_delay);
            tokio::spawn(async move {
                if connect_delay {
                    tokio::time::sleep(up + down).await;
                }
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pipe(client_read, server_write, up),
                    pipe(server_read, client_write, down)
                );
            });
        }
    }
}

/// Copies one direction, each chunk delayed by `delay`; EOF is delayed too.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    if delay.is_zero() {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
        return;
    }
    // Bounded: a slow receiver pushes back on the sender through TCP.
    let (queue, mut due) = mpsc::channel::<(Instant, Option<Bytes>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match from.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
            };
            let end = chunk.is_none();
            if queue.send((Instant::now() + delay, chunk)).await.is_err() || end {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at.into()).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
