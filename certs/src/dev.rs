//! A development CA, so a fresh checkout serves TLS without any setup.
//!
//! On first start the gateway calls [`ensure_dev_certs`] for the listener's
//! configured files. If they are missing it creates (or reuses) a local CA
//! in the same directory and issues a server certificate for `localhost`,
//! `127.0.0.1` and `::1`; the user trusts `ca.crt` once and every
//! regenerated server certificate verifies. Existing files are never
//! touched, and a half-present pair is an error rather than an overwrite,
//! because the configured paths may be a real deployment's files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use crate::{CertError, CertPaths, load_certified_key};

#[cfg(test)]
mod tests;

/// File name of the development CA certificate, beside the server certificate.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the development CA private key, beside the server certificate.
pub const CA_KEY_FILE: &str = "ca.key";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Validity of the server certificate.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Validity of the CA: long enough that users trust it once.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Names the development server certificate is valid for.
const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What [`ensure_dev_certs`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevCerts {
    /// A server certificate and key were written, signed by the CA at
    /// `ca_path` (new, or reused from an earlier run).
    Generated {
        /// The CA certificate to trust (`<dir>/ca.crt`).
        ca_path: PathBuf,
    },
    /// Both files already existed; nothing was written.
    Existing,
}

/// Development certificates for a fresh machine.
///
/// If neither `cert` nor `key` exists: create `ca.crt`/`ca.key` in the
/// directory of `cert` (or reuse the CA there), issue a server certificate
/// signed by it for `localhost`, `127.0.0.1` and `::1` (ECDSA P-256, one
/// year; the CA ten years) and write all as PEM, key files mode 0600 on
/// unix, creating directories as needed. If both exist, do nothing. If only
/// one exists, fail with [`CertError::IncompletePair`].
pub fn ensure_dev_certs(cert: &Path, key: &Path) -> Result<DevCerts, CertError> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(DevCerts::Existing),
        (false, false) => {}
        (true, false) => return Err(incomplete(cert, key)),
        (false, true) => return Err(incomplete(key, cert)),
    }
    let dir = parent_dir(cert);
    create_dir(&dir)?;
    create_dir(&parent_dir(key))?;

    let ca_paths = CertPaths::new(dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let ca = load_or_create_ca(&ca_paths)?;

    let generate = |source| CertError::Generate {
        path: cert.to_path_buf(),
        source,
    };
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let server_cert = server_params()
        .map_err(generate)?
        .signed_by(&server_key, &ca)
        .map_err(generate)?;
    // Key first: a crash in between leaves "key without cert", which the
    // next start reports instead of serving a certificate without its key.
    write_file(key, &server_key.serialize_pem(), true)?;
    write_file(cert, &server_cert.pem(), false)?;
    Ok(DevCerts::Generated { ca_path: ca_paths.cert })
}

/// The CA in `paths` if both files exist (checked like any pair), else a new one.
fn load_or_create_ca(paths: &CertPaths) -> Result<Issuer<'static, KeyPair>, CertError> {
    match (paths.cert.exists(), paths.key.exists()) {
        (true, true) => load_ca(paths),
        (false, false) => create_ca(paths),
        (true, false) => Err(incomplete(&paths.cert, &paths.key)),
        (false, true) => Err(incomplete(&paths.key, &paths.cert)),
    }
}

fn load_ca(paths: &CertPaths) -> Result<Issuer<'static, KeyPair>, CertError> {
    // Same checks as a served pair: parses, unexpired, key matches.
    let certified = load_certified_key(paths)?;
    let ca_der = certified.end_entity_cert().map_err(|_| CertError::NoCertificate {
        path: paths.cert.clone(),
    })?;
    let is_ca = x509_parser::parse_x509_certificate(ca_der).is_ok_and(|(_, c)| c.is_ca());
    if !is_ca {
        return Err(CertError::InvalidCertificate {
            path: paths.cert.clone(),
            reason: "not a CA certificate (basicConstraints CA:TRUE missing)".into(),
        });
    }
    let key_pem = fs::read_to_string(&paths.key).map_err(|source| CertError::Read {
        path: paths.key.clone(),
        source,
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::UnsupportedKey {
        path: paths.key.clone(),
        reason: e.to_string(),
    })?;
    Issuer::from_ca_cert_der(ca_der, key).map_err(|e| CertError::InvalidCertificate {
        path: paths.cert.clone(),
        reason: e.to_string(),
    })
}

fn create_ca(paths: &CertPaths) -> Result<Issuer<'static, KeyPair>, CertError> {
    let generate = |source| CertError::Generate {
        path: paths.cert.clone(),
        source,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "agentmux development CA");
    params.distinguished_name.push(DnType::OrganizationName, "agentmux");
    // Constrained(0): this CA signs leaf certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (not_before, not_after) = validity(CA_VALIDITY);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key).map_err(generate)?;
    write_file(&paths.key, &key.serialize_pem(), true)?;
    write_file(&paths.cert, &cert.pem(), false)?;
    Ok(Issuer::new(params, key))
}

fn server_params() -> Result<CertificateParams, rcgen::Error> {
    // `new` turns the address strings into IP address SANs.
    let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "agentmux development");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let (not_before, not_after) = validity(SERVER_VALIDITY);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

/// From a day ago (tolerates clocks running behind) until `length` from now.
fn validity(length: Duration) -> (SystemTime, SystemTime) {
    let now = SystemTime::now();
    (now.checked_sub(DAY).unwrap_or(now), now + length)
}

fn incomplete(present: &Path, missing: &Path) -> CertError {
    CertError::IncompletePair {
        present: present.to_path_buf(),
        missing: missing.to_path_buf(),
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a watcher or a second
/// process never reads half a file; private files are created 0600 so the
/// key is never readable by others, not even briefly.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
