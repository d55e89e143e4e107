//! Certificates for agentmux: loading, SNI selection, hot reload, mTLS
//! identities, upstream trust and a development CA.
//!
//! This crate sits under the gateway's TLS listeners and upstream
//! connectors. It owns every rustls configuration the gateway builds, so the
//! rules live in one place:
//!
//! - **One crypto provider, passed explicitly.** Every builder gets
//!   [`provider()`] (ring). Nothing calls `ServerConfig::builder()` or
//!   `ClientConfig::builder()`, which consult the process default and panic
//!   when a dependency links a second provider.
//! - **TLS 1.2 and 1.3 only**, ALPN as the caller lists it.
//! - **Certificates are checked when loaded** ([`load_certified_key`]): PEM
//!   syntax, certificate parse, expiry, key type, key/certificate match.
//! - **SNI** ([`SniResolver`]): several certificates, exact names before
//!   wildcards before the default.
//! - **Hot reload**: [`SniResolver::reload`] swaps the whole set atomically;
//!   [`watch`] calls it when the files change on disk.
//! - **Development certificates** ([`dev::ensure_dev_certs`]): a local CA
//!   and a `localhost` certificate on first start.
//!
//! # Use
//!
//! ```no_run
//! use agentmux_certs::{CertPaths, ClientAuth, SniResolver, dev, server_config, watch};
//!
//! # fn main() -> Result<(), agentmux_certs::CertError> {
//! let paths = CertPaths::new("certs/dev/server.crt", "certs/dev/server.key");
//! if let dev::DevCerts::Generated { ca_path } = dev::ensure_dev_certs(&paths.cert, &paths.key)? {
//!     println!("generated development certificates (trust {})", ca_path.display());
//! }
//! let resolver = SniResolver::load(vec![paths])?;
//! let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
//! let config = server_config(resolver.clone(), alpn, &ClientAuth::None)?;
//! // Reloads on file changes for as long as the handle lives.
//! let watcher = watch(resolver)?;
//! # drop((config, watcher));
//! # Ok(())
//! # }
//! ```
//!
//! # How it fails
//!
//! Every fallible function returns [`CertError`], whose message is one
//! sentence starting with the file concerned ("certs/x.crt: no PEM
//! certificate found"). Nothing panics. A failed reload leaves the
//! certificates being served untouched, and the watcher logs the failure at
//! `warn` and retries on the next change.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod client;
pub mod dev;
mod error;
mod identity;
mod load;
mod resolver;
mod server;
mod watch;

#[cfg(test)]
mod test_support;

pub use client::{client_config, client_config_with_identity};
pub use error::CertError;
pub use identity::peer_identity;
pub use load::{CertPaths, load_certified_key, load_roots};
pub use resolver::SniResolver;
pub use server::{ClientAuth, server_config};
pub use watch::{CertWatcher, watch, watch_with};

/// The ring crypto provider, to pass explicitly to every rustls builder.
///
/// Built once and shared; cloning the `Arc` is all a call costs.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}
