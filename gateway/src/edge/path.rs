//! Path normalization: the one form of a request path that the router
//! matches and the upstream receives.
//!
//! A gateway that routes on one spelling of a path and forwards another
//! lets a client pick which route's filters it meets: `/x/../admin`
//! misses an auth-protected `/admin` prefix, and an upstream that
//! normalizes serves `/admin` anyway. So, before routing and by default
//! (compare Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`, and nginx's `merge_slashes` and
//! URI normalization):
//!
//! 1. percent-encoded unreserved characters (RFC 3986 §2.3: letters,
//!    digits, `-` `.` `_` `~`) are decoded and other escapes get
//!    upper-case hex (§6.2.2.1, §6.2.2.2);
//! 2. an escaped slash or backslash (`%2F`, `%5C`) and a literal `\` are
//!    refused ([`PathError`], 400): upstreams disagree on whether they
//!    separate segments, which is exactly the ambiguity an attacker needs.
//!    `escaped_slashes = "keep"` passes them through as ordinary
//!    characters instead;
//! 3. runs of slashes are merged (`merge_slashes = false` keeps them);
//! 4. dot segments are removed (§5.2.4), never climbing above the root.
//!
//! Decoding comes first so that `%2e%2e` is a dot segment too. The query
//! is not touched.

use std::borrow::Cow;

pub use crate::config::{EscapedSlashes, PathPolicy};

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` or `%5C` in the path.
    #[error("escaped slash or backslash (%2F, %5C) in the path")]
    EscapedSlash,
    /// A literal backslash in the path.
    #[error("backslash in the path")]
    Backslash,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-escape in the path")]
    BadEscape,
    /// Not an origin-form path (does not start with `/`).
    #[error("the path must start with '/'")]
    NotAbsolute,
}

/// The normalized form of `path` (borrowed when it is already normal).
pub fn normalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if !policy.normalize || path == "*" || path.is_empty() {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path, policy) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, policy.escaped_slashes)?;
    Ok(Cow::Owned(remove_dots(&decoded, policy.merge_slashes)))
}

/// The common case, checked without allocating: no escapes, no
/// backslash, no empty or dot segments.
fn is_normal(path: &str, policy: &PathPolicy) -> bool {
    if path.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
    // Every segment after the leading '/'; the last may be empty (a
    // trailing slash is meaningful and kept).
    let mut segments = path[1..].split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last && policy.merge_slashes) {
            return false;
        }
    }
    true
}

fn decode(path: &str, slashes: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(PathError::Backslash),
                // A literal backslash cannot be forwarded as is in a URI;
                // kept as its escape, it stays an ordinary character.
                EscapedSlashes::Keep => out.push_str("%5C"),
            },
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex(*b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let c = hi << 4 | lo;
                if is_unreserved(c) {
                    out.push(char::from(c));
                } else if (c == b'/' || c == b'\\') && slashes == EscapedSlashes::Reject {
                    return Err(PathError::EscapedSlash);
                } else {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(hi)]));
                    out.push(char::from(HEX[usize::from(lo)]));
                }
                i += 2;
            }
            _ => {
                // A run of ordinary characters, copied as text: pushed a
                // byte at a time as `char`s, UTF-8 (`é`) became Latin-1
                // mojibake (`Ã©`).
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'%' | b'\\'))
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&path[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 over segments; `path` starts with '/'. A path whose
/// last segment is empty, `.` or `..` keeps a trailing slash.
fn remove_dots(path: &str, merge_slashes: bool) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let raw: Vec<&str> = path[1..].split('/').collect();
    let trailing = matches!(raw.last(), Some(&("" | "." | "..")));
    for (i, s) in raw.iter().enumerate() {
        let last = i + 1 == raw.len();
        match *s {
            "." => {}
            ".." => {
                kept.pop();
            }
            "" if merge_slashes || last => {}
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p, &PathPolicy::default()).map(Cow::into_owned)
    }

    #[test]
    fn the_issue_s_bypasses_all_become_admin_or_400() {
        assert_eq!(norm("/x/../admin").unwrap(), "/admin");
        assert_eq!(norm("/./admin").unwrap(), "/admin");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/ok/..%2f..%2fadmin"), Err(PathError::EscapedSlash));
        assert_eq!(norm("/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/a/%2E/b").unwrap(), "/a/b");
        assert_eq!(norm("/admin\\x"), Err(PathError::Backslash));
        assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash));
    }

    #[test]
    fn dot_segments_never_climb_above_the_root() {
        assert_eq!(norm("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/./b/../c").unwrap(), "/a/c");
    }

    #[test]
    fn trailing_slashes_stay_and_ordinary_paths_are_borrowed() {
        assert_eq!(norm("/a/").unwrap(), "/a/");
        assert_eq!(norm("/").unwrap(), "/");
        assert!(matches!(
            normalize("/v1/chat/completions", &PathPolicy::default()),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("/a/", &PathPolicy::default()), Ok(Cow::Borrowed(_))));
        assert!(matches!(
            normalize("/a..b/.c", &PathPolicy::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn escapes_are_decoded_only_when_unreserved_and_upper_cased_otherwise() {
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/a%3fb%3F").unwrap(), "/a%3Fb%3F");
        assert_eq!(norm("/%7euser").unwrap(), "/~user");
        assert_eq!(norm("/%25").unwrap(), "/%25");
        assert_eq!(norm("/%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/%4"), Err(PathError::BadEscape));
    }

    #[test]
    fn switches_loosen_each_rule() {
        let keep = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(normalize("/a%2fb/../c", &keep).unwrap(), "/c");
        assert_eq!(normalize("/a%2fb", &keep).unwrap(), "/a%2Fb");
        assert_eq!(normalize("/a\\b", &keep).unwrap(), "/a%5Cb");
        let slashes = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(normalize("/a//b", &slashes).unwrap(), "/a//b");
        assert_eq!(normalize("/a//../b", &slashes).unwrap(), "/a/b");
        let raw = PathPolicy {
            normalize: false,
            ..PathPolicy::default()
        };
        assert_eq!(normalize("/x/../admin", &raw).unwrap(), "/x/../admin");
    }

    /// Found by the `request_head` fuzz target: a path with UTF-8 in it
    /// (hyper passes it through) came out as mojibake once anything in it
    /// needed normalizing.
    #[test]
    fn utf8_in_a_path_is_kept_as_is() {
        assert_eq!(
            norm("/files/r%C3%A9sum%c3%a9/./é.pdf").unwrap(),
            "/files/r%C3%A9sum%C3%A9/é.pdf"
        );
        assert_eq!(norm("/a/×\u{9c}/../ü%7e").unwrap(), "/a/ü~");
        assert_eq!(norm("/日本/%2e/語").unwrap(), "/日本/語");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in ["/x/../admin", "//a//b/", "/%61/%2e/c", "/a%20b/../%7e", "/a/b/.."] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{p}");
        }
    }
}
