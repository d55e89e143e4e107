//! Reloading certificates when their files change on disk.
//!
//! The watcher observes the *directories* holding the files, not the files:
//! editors, `cp`, certbot and Kubernetes secret volumes replace a file by
//! renaming a new one over it (or swapping a `..data` symlink), which a watch
//! on the old file's inode never reports. Events are debounced so that a
//! certificate and key written one after the other are read once, as a pair.
//!
//! A reload that fails (half-written pair, key not matching yet, ...) is
//! logged at `warn` and changes nothing; the next change triggers another
//! try, so the usual "write cert, then key" sequence ends with the new pair.
//!
//! The debounce and reload run on a dedicated OS thread, not a tokio task:
//! the watcher works the same inside or outside a runtime, and its blocking
//! file reads never occupy a runtime worker.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::{CertError, SniResolver};

#[cfg(test)]
mod tests;

/// Quiet time after the last change before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Upper bound on the wait, so a directory that never stops changing still
/// gets its certificates reloaded.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Handle of a running certificate watcher; watching stops when it is dropped.
///
/// Dropping signals the watcher thread and returns at once; a reload already
/// in progress finishes in the background.
pub struct CertWatcher {
    // Dropping the notify watcher removes the directory watches.
    _watcher: RecommendedWatcher,
    stop: Sender<Message>,
    dirs: Vec<PathBuf>,
}

impl CertWatcher {
    /// The directories being watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl std::fmt::Debug for CertWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertWatcher")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl Drop for CertWatcher {
    fn drop(&mut self) {
        // The thread may already be gone (it exits if notify drops its
        // sender first); nothing to do then.
        let _ = self.stop.send(Message::Stop);
    }
}

enum Message {
    Changed,
    Stop,
}

/// Watches the parent directories of all the resolver's files and calls
/// [`SniResolver::reload`] after changes (debounced ~200 ms). Success is
/// logged at `info`, failure at `warn` (the old certificates stay). Runs on
/// its own thread until the returned handle is dropped; fine to call from
/// inside a tokio runtime.
pub fn watch(resolver: Arc<SniResolver>) -> Result<CertWatcher, CertError> {
    watch_with(resolver, |_| {})
}

/// Like [`watch`], and also calls `on_reload` with the outcome of every
/// reload attempt (after logging it), e.g. to count reloads in a metric.
pub fn watch_with<F>(resolver: Arc<SniResolver>, on_reload: F) -> Result<CertWatcher, CertError>
where
    F: Fn(&Result<(), CertError>) + Send + 'static,
{
    let mut dirs = BTreeSet::new();
    let mut names = HashSet::new();
    for paths in resolver.paths() {
        for file in [&paths.cert, &paths.key] {
            dirs.insert(parent_dir(file));
            if let Some(name) = file.file_name() {
                names.insert(name.to_os_string());
            }
        }
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().collect();

    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) if is_relevant(&event, &names) => {
            let _ = events.send(Message::Changed);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "certificate directory watch reported an error"),
    })
    .map_err(|source| CertError::Watch {
        path: dirs.first().cloned().unwrap_or_default(),
        source,
    })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| CertError::Watch {
                path: dir.clone(),
                source,
            })?;
    }

    thread::Builder::new()
        .name("agentmux-cert-watch".into())
        .spawn(move || run(&resolver, &rx, &on_reload))
        .map_err(|e| CertError::Watch {
            path: dirs.first().cloned().unwrap_or_default(),
            source: notify::Error::io(e),
        })?;
    tracing::debug!(dirs = ?dirs, "watching certificate directories");

    Ok(CertWatcher {
        _watcher: watcher,
        stop: tx,
        dirs,
    })
}

/// The watcher thread: wait for a change, let the burst settle, reload.
fn run<F>(resolver: &SniResolver, rx: &Receiver<Message>, on_reload: &F)
where
    F: Fn(&Result<(), CertError>),
{
    while let Ok(Message::Changed) = rx.recv() {
        if !settle(rx) {
            return;
        }
        let outcome = resolver.reload();
        match &outcome {
            Ok(()) => tracing::info!(
                certificates = resolver.paths().len(),
                names = ?resolver.names(),
                "reloaded TLS certificates"
            ),
            Err(error) => tracing::warn!(
                %error,
                "TLS certificate reload failed; keeping the current certificates"
            ),
        }
        on_reload(&outcome);
    }
}

/// Waits until no change arrived for [`DEBOUNCE`] (or [`MAX_DELAY`] passed).
/// Returns false if the watcher is being stopped.
fn settle(rx: &Receiver<Message>) -> bool {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        match rx.recv_timeout(DEBOUNCE) {
            Ok(Message::Changed) if Instant::now() < deadline => {}
            Ok(Message::Changed) | Err(RecvTimeoutError::Timeout) => return true,
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Whether an event may have changed one of our files.
///
/// Reads are ignored, or the watcher's own reload would trigger the next
/// one. Names starting with `..` are the timestamped directory and `..data`
/// symlink a Kubernetes secret volume swaps on update.
fn is_relevant(event: &Event, names: &HashSet<OsString>) -> bool {
    // The kernel dropped events: we cannot know what changed, so re-read.
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.iter().any(|path| {
        path.file_name()
            .is_some_and(|name| names.contains(name) || name.to_string_lossy().starts_with(".."))
    })
}

/// The directory to watch for `file`; `.` for a bare file name.
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
