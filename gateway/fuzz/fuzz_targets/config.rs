//! Fuzzes the config parser: any bytes that are UTF-8, as a config file
//! given to `Config::parse` (TOML, then validation into runtime types).
//!
//! Invariants: no panic; parsing is deterministic (the same text gives the
//! same config or the same errors); a refusal lists at least one error,
//! every error has a message (and so a non-empty key path or message), and
//! a line it names is a line of the text.

#![no_main]

use agentmux::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::parse(text, "fuzz.toml");
    let again = Config::parse(text, "fuzz.toml");
    // Debug text, not `==`: a NaN in a config would never equal itself.
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "parsing is not deterministic"
    );
    let Err(errors) = first else {
        return;
    };
    assert!(!errors.errors().is_empty(), "refused without an error");
    let lines = text.split('\n').count();
    for e in errors.errors() {
        assert!(
            !e.message().trim().is_empty(),
            "an error without a message at {:?}",
            e.path()
        );
        let shown = e.to_string();
        if let Some(rest) = shown.strip_prefix("line ") {
            let n: usize = rest
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a line number");
            assert!((1..=lines).contains(&n), "line {n} of a {lines}-line text: {shown}");
        }
    }
});
