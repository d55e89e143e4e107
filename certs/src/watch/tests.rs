use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
use notify::{Event, EventKind};
use rustls_pki_types::CertificateDer;

use super::is_relevant;
use crate::test_support::{PemPair, TempDir, leaf, self_signed};
use crate::{SniResolver, watch, watch_with};

/// Poll interval and bound: up to 30 s in all, generous for a loaded CI box.
const POLL: Duration = Duration::from_millis(50);
const MAX_POLLS: u32 = 600;

/// Polls until the default certificate is `want`; true if it got there.
fn wait_for(resolver: &SniResolver, want: &CertificateDer<'_>) -> bool {
    for _ in 0..MAX_POLLS {
        if leaf(&resolver.resolve_name(None)) == *want {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

/// Replaces a file the way editors and `cp --atomic` tools do: write a
/// temporary file beside it, rename it over the original.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn picks_up_rewritten_files() {
    let dir = TempDir::new("watch-rewrite");
    let first = self_signed(&["w.test"]);
    let paths = dir.write_pair("w", &first);
    let resolver = SniResolver::load(vec![paths.clone()]).unwrap();
    let watcher = watch(resolver.clone()).unwrap();
    assert_eq!(watcher.dirs(), [dir.path().to_path_buf()]);

    // Renamed into place, key first then certificate.
    let second = self_signed(&["w.test"]);
    replace(&paths.key, &second.key);
    replace(&paths.cert, &second.cert);
    assert!(wait_for(&resolver, &second.der), "rename not picked up");

    // Written in place.
    let third = self_signed(&["w.test"]);
    std::fs::write(&paths.cert, &third.cert).unwrap();
    std::fs::write(&paths.key, &third.key).unwrap();
    assert!(wait_for(&resolver, &third.der), "in-place write not picked up");
}

#[test]
fn failed_reload_keeps_the_old_certificate_and_retries() {
    let dir = TempDir::new("watch-broken");
    let first = self_signed(&["w.test"]);
    let paths = dir.write_pair("w", &first);
    let resolver = SniResolver::load(vec![paths.clone()]).unwrap();
    let (tx, rx) = mpsc::channel();
    let _watcher = watch_with(resolver.clone(), move |outcome| {
        let _ = tx.send(outcome.as_ref().map_err(ToString::to_string).cloned());
    })
    .unwrap();

    // Only the certificate changes: its key no longer matches.
    let second: PemPair = self_signed(&["w.test"]);
    replace(&paths.cert, &second.cert);
    let outcome = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let err = outcome.unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(leaf(&resolver.resolve_name(None)), first.der);

    // The key arrives: the next change completes the pair.
    replace(&paths.key, &second.key);
    assert!(wait_for(&resolver, &second.der), "retry after failure not picked up");
}

#[test]
fn dropping_the_handle_stops_watching() {
    let dir = TempDir::new("watch-drop");
    let first = self_signed(&["w.test"]);
    let paths = dir.write_pair("w", &first);
    let resolver = SniResolver::load(vec![paths.clone()]).unwrap();
    let (tx, rx) = mpsc::channel();
    let watcher = watch_with(resolver.clone(), move |_| {
        let _ = tx.send(());
    })
    .unwrap();
    drop(watcher);

    let second = self_signed(&["w.test"]);
    replace(&paths.key, &second.key);
    replace(&paths.cert, &second.cert);
    // Wider than the debounce; a live watcher would have reloaded by then.
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
    assert_eq!(leaf(&resolver.resolve_name(None)), first.der);
}

#[test]
fn missing_directory_is_an_error() {
    let dir = TempDir::new("watch-missing");
    let paths = dir.write_pair("w", &self_signed(&["w.test"]));
    let resolver = SniResolver::load(vec![paths]).unwrap();
    std::fs::remove_dir_all(dir.path()).unwrap();
    let err = watch(resolver).unwrap_err();
    assert!(err.to_string().starts_with(&dir.path().display().to_string()), "{err}");
}

#[test]
fn relevance_filter() {
    let names: HashSet<OsString> = ["server.crt", "server.key"].map(OsString::from).into();
    let event = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
    let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    assert!(is_relevant(&event(modify, "/c/server.crt"), &names));
    assert!(is_relevant(
        &event(EventKind::Create(CreateKind::File), "/c/server.key"),
        &names
    ));
    assert!(!is_relevant(&event(modify, "/c/other.log"), &names));
    assert!(is_relevant(&event(modify, "/c/..data"), &names), "k8s secret swap");
    assert!(
        !is_relevant(
            &event(EventKind::Access(AccessKind::Open(AccessMode::Read)), "/c/server.crt"),
            &names
        ),
        "our own reads must not trigger a reload"
    );
    assert!(is_relevant(
        &event(EventKind::Access(AccessKind::Close(AccessMode::Write)), "/c/server.crt"),
        &names
    ));
}
