//! Parameters of the auth filter.

use std::collections::HashSet;
use std::sync::Arc;

use super::keys::{ApiKeyHash, KeyTable, NamedKey};
use crate::InvalidParam;

/// Validated auth parameters: named API key hashes and/or allowed mTLS
/// identities (at least one of the two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    pub(super) keys: KeyTable,
    pub(super) identities: HashSet<Arc<str>>,
    pub(super) forward_credentials: bool,
}

impl AuthParams {
    /// `api_keys` as `(name, "sha256:<hex>")` pairs (names unique and not
    /// empty) and `allowed_identities`, the mTLS identities let in.
    pub fn new<K, N, H, I, S>(api_keys: K, allowed_identities: I) -> Result<Self, InvalidParam>
    where
        K: IntoIterator<Item = (N, H)>,
        N: Into<Arc<str>>,
        H: AsRef<str>,
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        let mut keys = Vec::new();
        let mut names = HashSet::new();
        for (name, hash) in api_keys {
            let name: Arc<str> = name.into();
            if name.is_empty() {
                return Err(InvalidParam::new("api_keys", "key names must not be empty"));
            }
            if !names.insert(name.clone()) {
                return Err(InvalidParam::new("api_keys", format!("name {name:?} is used twice")));
            }
            let hash: ApiKeyHash = hash
                .as_ref()
                .parse()
                .map_err(|e: InvalidParam| InvalidParam::new("api_keys", format!("key {name:?}: {}", e.reason())))?;
            keys.push(NamedKey { name, hash });
        }
        let identities: HashSet<Arc<str>> = allowed_identities.into_iter().map(Into::into).collect();
        if identities.iter().any(|i| i.is_empty()) {
            return Err(InvalidParam::new("allowed_identities", "identities must not be empty"));
        }
        if keys.is_empty() && identities.is_empty() {
            return Err(InvalidParam::new(
                "api_keys",
                "or allowed_identities must list at least one entry (nothing could pass)",
            ));
        }
        Ok(Self {
            keys: KeyTable::new(keys),
            identities,
            forward_credentials: false,
        })
    }

    /// Forward the API key header upstream after it was verified. Off by
    /// default: the gateway's keys are the gateway's, and an upstream that
    /// needs its own credentials gets them from its cluster config.
    pub fn with_forward_credentials(mut self, forward: bool) -> Self {
        self.forward_credentials = forward;
        self
    }

    /// The configured key names.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.names().map(|n| &**n)
    }
}
