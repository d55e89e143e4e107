//! The one error type of this crate.
//!
//! Every variant that concerns a file carries its path, and every `Display`
//! is a single sentence that starts with that path, so an operator reading a
//! log line or a failed `agentmux validate` knows which file to fix and what
//! is wrong with it.

use std::io;
use std::path::PathBuf;

/// Why a certificate, key, CA file or watch could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The file could not be read (missing, permissions, a directory, ...).
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// The file holds no PEM section at all (DER, or not a certificate file).
    #[error("{}: not a PEM file (no \"-----BEGIN\" section found)", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
    },

    /// A PEM section is broken (missing END line, bad base64, ...).
    #[error("{}: malformed PEM: {source}", path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        #[source]
        source: rustls_pki_types::pem::Error,
    },

    /// The file is PEM but holds no `CERTIFICATE` section (a key file given
    /// as the certificate, for instance).
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },

    /// A `CERTIFICATE` section does not hold a parsable X.509 certificate.
    #[error("{}: invalid certificate: {reason}", path.display())]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },

    /// The certificate's validity period has ended.
    #[error("{}: certificate expired on {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// The end of the validity period, as written by the parser.
        not_after: String,
    },

    /// The file is PEM but holds no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no PEM private key found", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },

    /// The private key is of a type the ring provider cannot sign with, or is corrupt.
    #[error("{}: unsupported or invalid private key: {reason}", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// What rustls reported.
        reason: String,
    },

    /// The private key is not the one the certificate was issued for.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// [`SniResolver::load`](crate::SniResolver::load) was given no pair.
    #[error("no certificate configured: at least one cert/key pair is needed")]
    NoCertificates,

    /// A client-certificate verifier could not be built from the CA file.
    #[error("{}: cannot verify client certificates with this CA: {source}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// rustls rejected the configuration (should not happen with the ring provider).
    #[error("TLS configuration rejected: {source}")]
    Config {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },

    /// A directory could not be watched for changes.
    #[error("{}: cannot watch directory: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What the watcher reported.
        #[source]
        source: notify::Error,
    },

    /// A development certificate could not be generated.
    #[error("{}: cannot generate certificate: {source}", path.display())]
    Generate {
        /// The file that was to be written.
        path: PathBuf,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },

    /// A file or directory could not be written.
    #[error("{}: cannot write file: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// Only one file of a certificate/key pair exists, so generating a new
    /// pair would overwrite the other half.
    #[error(
        "{}: missing while {} exists; remove it (or add the missing file) to regenerate",
        missing.display(),
        present.display()
    )]
    IncompletePair {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
}
