//! The drain signal WebSocket sessions watch: one flag and one `Notify` for
//! the whole gateway, checked with an atomic load on each relay poll.
//!
//! A `CancellationToken` future takes two mutexes on every poll (the
//! token's tree node and the `Notify` waiter list), and a relay is polled
//! once per burst of frames, so it showed in profiles. Here a session
//! registers its waker once and afterwards re-registers only when the
//! task's waker changes (`Waker::will_wake`), which for a spawned task it
//! does not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// Tells every session that the gateway is draining.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    started: AtomicBool,
    notify: Arc<Notify>,
}

impl Drain {
    /// Starts the drain: every watching session wakes and closes with 1001.
    pub(crate) fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the drain has started.
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// A watch for one session.
    pub(crate) fn watch(self: &Arc<Self>) -> DrainWatch {
        DrainWatch {
            // Created before the flag is first read, so a drain that starts
            // in between still resolves it (it counts `notify_waiters`).
            notified: Box::pin(self.notify.clone().notified_owned()),
            drain: self.clone(),
            registered: None,
        }
    }
}

/// One session's view of the drain signal.
pub(crate) struct DrainWatch {
    drain: Arc<Drain>,
    notified: Pin<Box<OwnedNotified>>,
    /// The waker the `Notify` holds for us.
    registered: Option<Waker>,
}

impl std::fmt::Debug for DrainWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainWatch")
            .field("started", &self.drain.is_started())
            .finish()
    }
}

impl DrainWatch {
    /// Whether the drain has started; otherwise makes sure `cx`'s task is
    /// woken when it does.
    pub(crate) fn poll_started(&mut self, cx: &mut Context<'_>) -> bool {
        if self.drain.is_started() {
            return true;
        }
        if self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return false;
        }
        if self.notified.as_mut().poll(cx).is_ready() {
            return true;
        }
        self.registered = Some(cx.waker().clone());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_wakes_when_the_drain_starts() {
        let drain = Arc::new(Drain::default());
        let mut w = drain.watch();
        let d = drain.clone();
        let task = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if w.poll_started(cx) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await
        });
        tokio::task::yield_now().await;
        d.start();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        // A watch made after the start sees it at once.
        let mut late = drain.watch();
        let waker = Waker::noop();
        assert!(late.poll_started(&mut Context::from_waker(waker)));
    }
}
