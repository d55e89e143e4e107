//! Hashed API keys and their constant-time lookup.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::InvalidParam;

const PREFIX: &str = "sha256:";

/// Hashes an API key into the form stored in config: `sha256:<64 hex>`.
///
/// Backs `agentmux hash-key`. Keys are expected to be long random tokens
/// (≥ 128 bits of entropy), which is why a plain, unsalted SHA-256 is
/// enough: there is nothing to guess a dictionary from.
pub fn hash_api_key(key: &str) -> String {
    ApiKeyHash::of(key.as_bytes()).to_string()
}

/// The SHA-256 of an API key, as configured (`sha256:<hex>`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// The hash of a presented key.
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// Compares in constant time: how long this takes does not depend on
    /// how many leading bytes match.
    pub fn ct_matches(&self, other: &ApiKeyHash) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl FromStr for ApiKeyHash {
    type Err = InvalidParam;

    /// Parses `sha256:<64 hex digits>`. The error never echoes the value: a
    /// raw key pasted by mistake must not end up in logs.
    fn from_str(s: &str) -> Result<Self, InvalidParam> {
        let bad = || {
            InvalidParam::new(
                "api_keys",
                format!(
                    "hash must look like sha256:<64 hex digits> (got {} characters; \
                     hash a key with `agentmux hash-key`)",
                    s.len()
                ),
            )
        };
        let hex_digits = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({self})")
    }
}

/// A configured key: its name (what [`crate::AgentIdentity`] carries) and
/// its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NamedKey {
    pub(super) name: Arc<str>,
    pub(super) hash: ApiKeyHash,
}

/// The keys of one route, searched without data-dependent branches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct KeyTable {
    keys: Vec<NamedKey>,
}

impl KeyTable {
    pub(super) fn new(keys: Vec<NamedKey>) -> Self {
        Self { keys }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key whose hash equals the hash of `presented`.
    ///
    /// Every configured key is compared, in constant time, whether or not
    /// an earlier one matched, and the matching index is selected with
    /// `subtle` rather than a branch: the time taken reveals neither which
    /// key matched nor how close a wrong key came. Hashing first makes the
    /// comparison length-independent too.
    pub(super) fn find(&self, presented: &[u8]) -> Option<&Arc<str>> {
        let digest = ApiKeyHash::of(presented);
        let mut matched = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.keys.iter().enumerate() {
            let equal = key.hash.0[..].ct_eq(&digest.0[..]);
            index.conditional_assign(&(i as u64), equal);
            matched |= equal;
        }
        if bool::from(matched) {
            self.keys.get(usize::try_from(index).ok()?).map(|k| &k.name)
        } else {
            None
        }
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.keys.iter().map(|k| &k.name)
    }
}
