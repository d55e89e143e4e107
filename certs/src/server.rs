//! The rustls `ServerConfig` of a TLS listener.
//!
//! TLS 1.2 and 1.3 only, the ring provider passed explicitly (never the
//! process default, which panics when two providers are linked), the
//! certificate chosen per handshake by an [`SniResolver`], and optional
//! client-certificate verification (mTLS) against a CA file.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::{CertError, SniResolver, load_roots, provider};

#[cfg(test)]
mod tests;

/// Whether a listener asks clients for a certificate (mTLS).
///
/// The CA file is read when the config is built; to change it, build a new
/// config (the certificate files themselves reload through the resolver).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// A client certificate is requested; if one is sent it must chain to
    /// the CA in this PEM file, but clients without one are let in (the
    /// route's auth filter decides).
    Optional(PathBuf),
    /// Every client must present a certificate chaining to the CA in this
    /// PEM file, or the handshake fails.
    Required(PathBuf),
}

/// The TLS protocol versions every agentmux endpoint speaks.
pub(crate) static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Builds a listener's server config: TLS 1.2/1.3, ring provider, the given
/// ALPN protocols in preference order (e.g. `[b"h2", b"http/1.1"]`), the
/// certificate chosen by `resolver`, and client authentication as asked.
pub fn server_config(
    resolver: Arc<SniResolver>,
    alpn: Vec<Vec<u8>>,
    client_auth: &ClientAuth,
) -> Result<ServerConfig, CertError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| CertError::Config { source })?;
    let builder = match client_verifier(client_auth)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn;
    Ok(config)
}

fn client_verifier(client_auth: &ClientAuth) -> Result<Option<Arc<dyn ClientCertVerifier>>, CertError> {
    let (path, required) = match client_auth {
        ClientAuth::None => return Ok(None),
        ClientAuth::Optional(path) => (path, false),
        ClientAuth::Required(path) => (path, true),
    };
    let roots = Arc::new(load_roots(path)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder.build().map_err(|source| CertError::ClientVerifier {
        path: path.clone(),
        source,
    })?;
    Ok(Some(verifier))
}
