//! Resume: connections killed mid-stream (from either side, all of them,
//! repeatedly) lose, duplicate and reorder nothing; sessions move between
//! live connections; a repeated OPEN re-attaches; expiry is reported.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::raw::{RawPeer, data};
use super::*;

/// Serves `conn` with the numbered echo; returns a trigger that aborts the
/// connection from the server side.
fn serve_killable(mut conn: MuxConnection, seen: mpsc::UnboundedSender<(u64, u64)>) -> Arc<Notify> {
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                s = conn.next_session() => match s {
                    Some(s) => { tokio::spawn(numbered_echo(s, seen.clone())); }
                    None => break,
                },
                () = k.notified() => { conn.abort(); break; }
            }
        }
    });
    kill
}

/// One agent: sends `n` numbered messages, each once the gate allows it,
/// and checks every echo arrives once, in order; then closes.
async fn drive(session: MuxSession, n: u64, mut gate: watch::Receiver<u64>) {
    let id = session.id();
    let (mut tx, mut rx) = session.split();
    let writer = tokio::spawn(async move {
        for i in 0..n {
            gate.wait_for(|allowed| *allowed > i).await.unwrap();
            tx.send(numbered(i, (i % 5) as usize * 60)).await.unwrap();
        }
        tx
    });
    for i in 0..n {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("session {id}: message {i} never arrived"))
            .unwrap_or_else(|| panic!("session {id} ended: {:?}", rx.end()));
        assert_eq!(number(&msg), i, "session {id}: lost, duplicated or reordered");
    }
    let mut tx = writer.await.unwrap();
    tx.close(1000, "").unwrap();
    assert_eq!(rx.recv().await, None);
}

/// Counts what the upstream saw, checking per-session order.
#[derive(Default)]
struct Seen(HashMap<u64, u64>);

impl Seen {
    fn record(&mut self, (id, n): (u64, u64)) {
        let next = self.0.entry(id).or_insert(0);
        assert_eq!(n, *next, "upstream got session {id} out of order");
        *next += 1;
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

struct Chaos {
    sessions: u64,
    conns: usize,
    messages: u64,
    kills: usize,
}

/// Runs `sessions` echo sessions over `conns` connections and kills every
/// connection `kills` times mid-stream, alternating client- and
/// server-side aborts; the detached sessions are resumed on new
/// connections, least loaded first.
async fn run_chaos(c: Chaos) {
    let server = server(ServerConfig::default());
    let mux = MuxClient::new(client_config());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut links = Vec::new();
    for _ in 0..c.conns {
        let (conn, client) = connect_via(&mux, &server).await;
        links.push((client, serve_killable(conn, seen_tx.clone())));
    }
    // Sessions advance in steps; each kill comes when half of a step has
    // reached the upstream, so every session has frames in flight and none
    // has finished.
    let step = c.messages / (c.kills as u64 + 1);
    let (gate, gate_rx) = watch::channel(0u64);
    let mut agents = Vec::new();
    for id in 1..=c.sessions {
        let client = &links[id as usize % c.conns].0;
        let session = client.open(id, open_request(16 << 10)).await.unwrap();
        agents.push(tokio::spawn(drive(session, c.messages, gate_rx.clone())));
    }
    let mut seen = Seen::default();
    for k in 0..c.kills as u64 {
        gate.send_replace((k + 1) * step);
        let target = c.sessions * (k * step + step / 2);
        while seen.total() < target {
            seen.record(seen_rx.recv().await.unwrap());
        }
        links = kill_and_resume(&mux, &server, links, k % 2 == 0, &seen_tx).await;
    }
    gate.send_replace(c.messages);
    for a in agents {
        a.await.unwrap();
    }
    while let Ok(item) = seen_rx.try_recv() {
        seen.record(item);
    }
    assert_eq!(seen.0.len() as u64, c.sessions);
    assert!(seen.0.values().all(|n| *n == c.messages), "upstream lost messages");
    assert_eq!(server.stats().resumed, c.sessions * c.kills as u64);
    assert_eq!(server.stats().expired, 0);
    eventually("all sessions forgotten", || {
        mux.session_count() == 0 && server.stats().sessions == 0
    })
    .await;
}

async fn kill_and_resume(
    mux: &MuxClient,
    server: &MuxServer,
    links: Vec<(MuxClientConnection, Arc<Notify>)>,
    from_client: bool,
    seen: &mpsc::UnboundedSender<(u64, u64)>,
) -> Vec<(MuxClientConnection, Arc<Notify>)> {
    let mut detached = Vec::new();
    for (client, kill) in &links {
        if from_client {
            client.abort();
        } else {
            kill.notify_one();
        }
    }
    for (client, _) in &links {
        detached.extend(client.closed().await.detached);
    }
    let mut fresh = Vec::new();
    for _ in 0..links.len() {
        let (conn, client) = connect_via(mux, server).await;
        fresh.push((client, serve_killable(conn, seen.clone())));
    }
    for handle in detached {
        let target = fresh.iter().min_by_key(|(c, _)| c.session_count()).unwrap();
        target.0.resume(&handle).await.unwrap();
    }
    fresh
}

// Two workers: traffic keeps flowing while the test kills connections, so
// frames are in flight (queued, in the pipe) when they die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_killed_connection_loses_and_duplicates_nothing() {
    run_chaos(Chaos {
        sessions: 10,
        conns: 1,
        messages: 400,
        kills: 3,
    })
    .await;
}

// Two workers: traffic keeps flowing while the test kills connections, so
// frames are in flight (queued, in the pipe) when they die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_every_connection_killed_repeatedly_with_many_sessions() {
    run_chaos(Chaos {
        sessions: 200,
        conns: 4,
        messages: 60,
        kills: 4,
    })
    .await;
}

// Two workers: traffic keeps flowing while the test kills connections, so
// frames are in flight (queued, in the pipe) when they die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_moves_a_live_session_to_another_connection() {
    let server = server(ServerConfig::default());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mux = MuxClient::new(client_config());
    let (conn_a, a) = connect_via(&mux, &server).await;
    let (conn_b, b) = connect_via(&mux, &server).await;
    serve_killable(conn_a, seen_tx.clone());
    serve_killable(conn_b, seen_tx);
    let session = a.open(1, open_request(4096)).await.unwrap();
    let handle = session.handle();
    let (gate, gate_rx) = watch::channel(0u64);
    let agent = tokio::spawn(drive(session, 400, gate_rx));
    // Move it back and forth every 40 messages, mid-stream.
    for k in 0..8 {
        gate.send_replace((k + 1) * 40);
        for _ in 0..20 {
            seen_rx.recv().await.unwrap();
        }
        let (to, from) = if k % 2 == 0 { (&b, &a) } else { (&a, &b) };
        to.resume(&handle).await.unwrap();
        assert_eq!((to.session_count(), from.session_count()), (1, 0));
    }
    gate.send_replace(400);
    agent.await.unwrap();
    eventually("session finished", || mux.session_count() == 0).await;
    assert!(matches!(b.resume(&handle).await, Err(ResumeError::NotResumable(_))));
}

#[tokio::test]
async fn resume_after_grace_period_fails_and_upstream_session_expires() {
    let server = server(ServerConfig {
        resume_grace: Duration::from_millis(50),
        ..ServerConfig::default()
    });
    let mux = MuxClient::new(client_config());
    let (mut conn, client) = connect_via(&mux, &server).await;
    let opening = tokio::spawn(async move {
        let s = client.open(3, open_request(1000)).await.unwrap();
        (client, s)
    });
    let mut upstream = conn.next_session().await.unwrap();
    let (client, agent) = opening.await.unwrap();
    client.abort();
    let detached = client.closed().await.detached;
    assert_eq!(detached.len(), 1);
    assert!(detached[0].is_detached());
    // The upstream session waits out the grace period, then fails.
    assert_eq!(upstream.recv().await, None);
    assert_eq!(upstream.end(), Some(SessionEnd::Failed(SessionError::Expired)));
    assert_eq!(server.stats().expired, 1);

    let (_conn2, client2) = connect_via(&mux, &server).await;
    let err = client2.resume(&agent.handle()).await.unwrap_err();
    let ResumeError::Failed(e) = err else {
        panic!("{err}");
    };
    assert_eq!(e.close_code(), 1011);
    assert!(matches!(
        e,
        SessionError::Peer {
            code: ErrorCode::UnknownSession,
            ..
        }
    ));
    assert!(agent.end().is_some());
}

#[tokio::test]
async fn resume_by_repeated_open_replays_what_the_upstream_sent() {
    let server = server(ServerConfig::default());
    let (mut peer, conn) = RawPeer::connect(&server).await;
    serve(conn, |mut s| async move {
        s.send(Message::Text("hello".into())).await.unwrap();
        while let Some(m) = s.recv().await {
            s.send(m).await.unwrap();
        }
    });
    peer.send(&[Frame::Open {
        session: 9,
        open: Box::new(open_request(1000)),
    }])
    .await;
    // The connection dies as OPEN_OK and the greeting are on their way.
    drop(peer);

    let (mut peer, _conn) = RawPeer::connect(&server).await;
    peer.open(9, 1000).await;
    let hello = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(&hello, Frame::Data { seq: 1, payload, .. } if &payload[..] == b"hello"));
    peer.send(&[data(9, 1, b"x")]).await;
    let echo = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(&echo, Frame::Data { seq: 2, payload, .. } if &payload[..] == b"x"));
    assert_eq!(server.stats().sessions, 1);
}
