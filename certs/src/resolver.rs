//! Choosing the server certificate by SNI, and swapping the set on reload.
//!
//! The resolver sits inside every TLS listener's `ServerConfig`. The
//! handshake path only does one atomic load and at most two hash lookups;
//! [`SniResolver::reload`] builds a complete new index off to the side and
//! swaps it in with one store, so a handshake sees either the old set or the
//! new set, never a mix, and a reload that fails changes nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::{CertError, CertPaths, load_certified_key};

#[cfg(test)]
mod tests;

/// SNI resolver over several certificates.
///
/// The first pair is the default, served when the client sends no SNI (an
/// IP address, an old client) or a name no certificate covers. Every
/// certificate is indexed by the DNS names of its subjectAltName extension:
/// exact names, and wildcards `*.example.com` which match exactly one extra
/// label (`a.example.com`, not `example.com` or `a.b.example.com`). An exact
/// name beats a wildcard; when two certificates claim the same name, the one
/// listed first wins. Matching ignores case and a trailing dot.
pub struct SniResolver {
    paths: Vec<CertPaths>,
    index: ArcSwap<Index>,
}

/// One consistent set of loaded certificates.
struct Index {
    default: Arc<CertifiedKey>,
    /// Lower-case exact DNS name → certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Lower-case parent domain of a `*.` wildcard (`example.com` for
    /// `*.example.com`) → certificate.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Loads every pair; the first is the default. Fails on the first bad
    /// file, or if `pairs` is empty.
    pub fn load(pairs: Vec<CertPaths>) -> Result<Arc<Self>, CertError> {
        let index = Index::load(&pairs)?;
        Ok(Arc::new(Self {
            paths: pairs,
            index: ArcSwap::from_pointee(index),
        }))
    }

    /// Re-reads every file. On any error the current certificates stay in
    /// place and the error is returned; on success the new set is swapped in
    /// atomically (connections already established keep theirs).
    pub fn reload(&self) -> Result<(), CertError> {
        let index = Index::load(&self.paths)?;
        self.index.store(Arc::new(index));
        Ok(())
    }

    /// The pairs this resolver was loaded from, default first.
    pub fn paths(&self) -> &[CertPaths] {
        &self.paths
    }

    /// The certificate a client sending `server_name` as SNI gets (`None`:
    /// no SNI). Always returns one: unknown names get the default.
    pub fn resolve_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        self.index.load().lookup(server_name)
    }

    /// The DNS names currently indexed (exact and wildcard), sorted; for
    /// logs and the admin API.
    pub fn names(&self) -> Vec<String> {
        let index = self.index.load();
        let mut names: Vec<String> = index
            .exact
            .keys()
            .cloned()
            .chain(index.wildcard.keys().map(|parent| format!("*.{parent}")))
            .collect();
        names.sort();
        names
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.resolve_name(client_hello.server_name()))
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("paths", &self.paths)
            .field("names", &self.names())
            .finish()
    }
}

impl Index {
    fn load(pairs: &[CertPaths]) -> Result<Self, CertError> {
        let mut loaded = Vec::with_capacity(pairs.len());
        for paths in pairs {
            loaded.push(load_certified_key(paths)?);
        }
        Self::build(loaded)
    }

    fn build(certs: Vec<Arc<CertifiedKey>>) -> Result<Self, CertError> {
        let Some(default) = certs.first().cloned() else {
            return Err(CertError::NoCertificates);
        };
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &certs {
            for name in dns_names(cert) {
                // `or_insert` keeps the first certificate that claimed a name.
                match name.strip_prefix("*.") {
                    Some(parent) if !parent.is_empty() && !parent.contains('*') => {
                        wildcard.entry(parent.to_owned()).or_insert_with(|| Arc::clone(cert));
                    }
                    // Partial wildcards (`f*.example.com`) are not matched by
                    // clients we care about; skip rather than guess.
                    _ if name.contains('*') => {}
                    _ => {
                        exact.entry(name).or_insert_with(|| Arc::clone(cert));
                    }
                }
            }
        }
        Ok(Self {
            default,
            exact,
            wildcard,
        })
    }

    fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return Arc::clone(&self.default);
        };
        let name = normalize(name);
        if let Some(cert) = self.exact.get(&name) {
            return Arc::clone(cert);
        }
        let wildcard = name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent));
        Arc::clone(wildcard.unwrap_or(&self.default))
    }
}

/// Lower-case, without the trailing dot of a fully qualified name.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The normalised DNS subjectAltNames of a loaded certificate's leaf.
fn dns_names(cert: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = cert.cert.first() else {
        return Vec::new();
    };
    // The leaf already parsed when it was loaded, so a failure here only
    // means "no names": the certificate can still serve as the default.
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(normalize(dns)),
            _ => None,
        })
        .collect()
}
