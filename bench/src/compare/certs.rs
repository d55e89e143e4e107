//! A throwaway certificate for TLS comparisons (and the TLS tests): a
//! self-signed leaf for 127.0.0.1 made with the `openssl` command, so the
//! bench needs no certificate-generation crate. It is a leaf (CA:FALSE)
//! because webpki refuses a CA certificate as a server's, and clients trust
//! it directly with `--ca`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OPENSSL_CONFIG: &str = "[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = agentmux-bench
[leaf]
basicConstraints = critical, CA:FALSE
subjectAltName = IP:127.0.0.1
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
";

/// Paths of a generated certificate.
pub(crate) struct SelfSigned {
    /// PEM certificate (also the CA file clients trust).
    pub(crate) cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub(crate) key: PathBuf,
    /// Certificate followed by key, as haproxy's `crt` wants it.
    pub(crate) combined: PathBuf,
}

/// Writes `bench-cert.pem`, `bench-key.pem` and `bench-combined.pem` into `dir`.
pub(crate) fn self_signed(dir: &Path) -> Result<SelfSigned, String> {
    let conf = dir.join("bench-openssl.cnf");
    let cert = dir.join("bench-cert.pem");
    let key = dir.join("bench-key.pem");
    let combined = dir.join("bench-combined.pem");
    std::fs::write(&conf, OPENSSL_CONFIG).map_err(|e| format!("{}: {e}", conf.display()))?;
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-config")
        .arg(&conf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl (needed for TLS runs): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let both = [&cert, &key]
        .iter()
        .map(std::fs::read_to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?
        .concat();
    std::fs::write(&combined, both).map_err(|e| format!("{}: {e}", combined.display()))?;
    Ok(SelfSigned { cert, key, combined })
}
