//! The rustls `ClientConfig` for connections to upstreams.
//!
//! Trust comes from the cluster's CA file when it has one, otherwise from the
//! Mozilla roots compiled in by `webpki-roots` (not the system store, so the
//! gateway behaves the same in a bare container as on a desktop).

use std::path::Path;
use std::sync::Arc;

use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};

use crate::server::PROTOCOL_VERSIONS;
use crate::{CertError, CertPaths, load_roots, provider};

#[cfg(test)]
mod tests;

/// Client config for upstream TLS: trust the CA file when given, otherwise
/// the webpki-roots Mozilla roots; ALPN protocols in preference order; ring
/// provider; TLS 1.2/1.3; no client certificate.
pub fn client_config(ca: Option<&Path>, alpn: Vec<Vec<u8>>) -> Result<ClientConfig, CertError> {
    build(ca, alpn, None)
}

/// Like [`client_config`], but presents `identity` (a certificate chain and
/// its key) to upstreams that ask for a client certificate (mTLS).
pub fn client_config_with_identity(
    ca: Option<&Path>,
    alpn: Vec<Vec<u8>>,
    identity: &CertPaths,
) -> Result<ClientConfig, CertError> {
    build(ca, alpn, Some(identity))
}

fn build(ca: Option<&Path>, alpn: Vec<Vec<u8>>, identity: Option<&CertPaths>) -> Result<ClientConfig, CertError> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| CertError::Config { source })?
        .with_root_certificates(Arc::new(roots));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(paths) => {
            let certified = crate::load_certified_key(paths)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
    };
    config.alpn_protocols = alpn;
    Ok(config)
}
