//! Reading PEM certificate chains, private keys and CA bundles from disk.
//!
//! Each check that can fail has its own [`CertError`] variant naming the
//! file, so "the gateway does not start" always comes with "because this
//! file is wrong in this way". Everything is checked at load time — parse,
//! expiry, key type, key/certificate match — so a bad file is refused when
//! it is configured or reloaded, never discovered in a handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::time::ASN1Time;

use crate::{CertError, provider};

#[cfg(test)]
mod tests;

/// A certificate chain + private key pair, as two PEM file paths.
///
/// The certificate file holds the end-entity certificate first, then any
/// intermediates; the key file holds one PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
/// private key. Both may be the same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
}

impl CertPaths {
    /// Pairs a certificate file with its key file.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Loads and checks one pair into a rustls [`CertifiedKey`].
///
/// The key is loaded by the ring provider (RSA, ECDSA P-256/P-384, Ed25519)
/// and must be the key of the first certificate in the chain. Every
/// certificate in the chain must parse and must not have expired; one that
/// is not valid yet is accepted with a warning (clock skew on a freshly
/// issued certificate should not take a listener down).
pub fn load_certified_key(paths: &CertPaths) -> Result<Arc<CertifiedKey>, CertError> {
    let (chain, key) = read_pair(paths)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::UnsupportedKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        // The provider could not derive the public key, so there is nothing to
        // compare; rustls's own `CertifiedKey::from_der` accepts this case too.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(_) => Err(CertError::KeyMismatch {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
        }),
    }
}

/// Loads PEM CA certificates into a [`RootCertStore`].
///
/// Fails if the file holds no certificate, or none that can serve as a trust
/// anchor. Certificates that cannot be used are skipped with a warning, as
/// system bundles often carry a few odd ones.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let certs = read_certificates(path)?;
    let total = certs.len();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CertError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: format!("none of the {total} certificates can be used as a trust anchor"),
        });
    }
    if ignored > 0 {
        tracing::warn!(
            path = %path.display(),
            ignored,
            added,
            "skipped CA certificates that cannot be parsed"
        );
    }
    Ok(roots)
}

/// Reads a chain (parsed and unexpired) and the first private key of a pair.
fn read_pair(paths: &CertPaths) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let chain = read_certificates(&paths.cert)?;
    for cert in &chain {
        check_certificate(&paths.cert, cert)?;
    }
    let key = read_private_key(&paths.key)?;
    Ok((chain, key))
}

/// All `CERTIFICATE` sections of a PEM file, in file order (at least one).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<_> = read_sections(path)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key section of a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    read_sections(path)?
        .into_iter()
        // `from_pem` keeps only the three private key section kinds.
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .ok_or_else(|| CertError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// Every PEM section of a file, of any kind; an error if there is none, so a
/// DER or garbage file reads as "not a PEM file" rather than "no key".
fn read_sections(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, CertError> {
    let bytes = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::MalformedPem {
            path: path.to_path_buf(),
            source,
        })?;
    if sections.is_empty() {
        return Err(CertError::NotPem {
            path: path.to_path_buf(),
        });
    }
    Ok(sections)
}

/// Parses one certificate and checks its validity period.
fn check_certificate(path: &Path, der: &CertificateDer<'_>) -> Result<(), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let now = ASN1Time::now();
    let validity = cert.validity();
    if validity.not_after < now {
        return Err(CertError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before {
        tracing::warn!(
            path = %path.display(),
            not_before = %validity.not_before,
            "certificate is not valid yet; clients will reject it until then"
        );
    }
    Ok(())
}
