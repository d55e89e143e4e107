//! The authentication decision, shared by the tower layer and the
//! WebSocket upgrade path.

use std::collections::HashSet;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Extensions, HeaderMap, Request};

use super::error::{AuthError, Forbidden, Unauthenticated};
use super::keys::KeyTable;
use super::params::AuthParams;
use crate::rate_limit::{X_API_KEY, presented_api_key};
use crate::{AgentIdentity, AuthRejection, FilterMetrics, PeerIdentity};

/// Checks credentials against one route's keys and allow-list. Cheap to
/// clone; clones share the tables.
#[derive(Clone, Debug)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: KeyTable,
    identities: HashSet<Arc<str>>,
    forward_credentials: bool,
    metrics: Arc<dyn FilterMetrics>,
}

impl Authenticator {
    /// An authenticator for `params`.
    pub fn new(params: AuthParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: params.keys,
                identities: params.identities,
                forward_credentials: params.forward_credentials,
                metrics,
            }),
        }
    }

    /// Decides a request from its headers and extensions, without changing
    /// it. This is the call to make before a WebSocket upgrade.
    ///
    /// Either credential suffices: an API key (`Authorization: Bearer <k>`,
    /// else `x-api-key: <k>`) matching a configured key, or a
    /// [`PeerIdentity`] on the allow-list. The identity returned is the
    /// key's *name*, or the peer identity. No usable credential →
    /// [`Unauthenticated`]; a wrong key or an identity off the list (and no
    /// other credential that passes) → [`Forbidden`].
    pub fn authenticate(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<AgentIdentity, AuthError> {
        self.decide(headers, extensions).map(|(identity, _)| identity)
    }

    /// Authenticates `req` and, on success, inserts the [`AgentIdentity`]
    /// into its extensions and removes the verified API key header (unless
    /// forwarding credentials was configured). The tower layer does this.
    pub fn admit<B>(&self, req: &mut Request<B>) -> Result<AgentIdentity, AuthError> {
        let (identity, via_key) = self.decide(req.headers(), req.extensions())?;
        if via_key && !self.inner.forward_credentials {
            strip_api_key(req.headers_mut());
        }
        req.extensions_mut().insert(identity.clone());
        Ok(identity)
    }

    /// [`Self::admit`] for a request already split into parts, e.g. a
    /// WebSocket upgrade request before it is forwarded.
    pub fn admit_parts(&self, parts: &mut Parts) -> Result<AgentIdentity, AuthError> {
        let (identity, via_key) = self.decide(&parts.headers, &parts.extensions)?;
        if via_key && !self.inner.forward_credentials {
            strip_api_key(&mut parts.headers);
        }
        parts.extensions.insert(identity.clone());
        Ok(identity)
    }

    /// The decision, and whether an API key (rather than the peer identity)
    /// let the request in.
    fn decide(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<(AgentIdentity, bool), AuthError> {
        let mut rejection = None;
        let presented = presented_api_key(headers).filter(|_| !self.inner.keys.is_empty());
        if let Some(presented) = presented {
            match self.inner.keys.find(presented) {
                Some(name) => return Ok((AgentIdentity(name.clone()), true)),
                None => rejection = Some(AuthRejection::InvalidKey),
            }
        }
        let peer = extensions
            .get::<PeerIdentity>()
            .filter(|_| !self.inner.identities.is_empty());
        if let Some(PeerIdentity(peer)) = peer {
            match self.inner.identities.get(peer.as_str()) {
                Some(allowed) => return Ok((AgentIdentity(allowed.clone()), false)),
                None => {
                    rejection.get_or_insert(AuthRejection::IdentityNotAllowed);
                }
            }
        }
        let error = match rejection {
            Some(reason) => AuthError::Forbidden(Forbidden::new(reason)),
            None => AuthError::Unauthenticated(Unauthenticated::new()),
        };
        self.inner.metrics.auth_rejected(error.reason());
        Err(error)
    }
}

/// Removes the header that carried the API key: `Authorization` only if it
/// is a Bearer credential (another scheme may be meant for the upstream),
/// and `x-api-key`.
fn strip_api_key(headers: &mut HeaderMap) {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
    if bearer {
        headers.remove(AUTHORIZATION);
    }
    headers.remove(&X_API_KEY);
}
