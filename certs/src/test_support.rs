//! Helpers shared by the module tests: temporary directories, certificates
//! made with rcgen, and a TLS handshake over an in-memory duplex pipe.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::CertPaths;

/// A directory under the system temp dir, unique per test, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "agentmux-certs-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to `name` in this directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes a PEM pair as `<name>.crt` / `<name>.key`.
    pub(crate) fn write_pair(&self, name: &str, pair: &PemPair) -> CertPaths {
        CertPaths::new(
            self.write(&format!("{name}.crt"), &pair.cert),
            self.write(&format!("{name}.key"), &pair.key),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate and its key, as PEM text.
#[derive(Clone)]
pub(crate) struct PemPair {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) der: CertificateDer<'static>,
}

fn leaf_params(sans: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, sans.first().copied().unwrap_or("leaf"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A self-signed ECDSA certificate for `sans`.
pub(crate) fn self_signed(sans: &[&str]) -> PemPair {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(sans).self_signed(&key).unwrap();
    PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// A self-signed certificate whose validity ended yesterday.
pub(crate) fn expired(sans: &[&str]) -> PemPair {
    let key = KeyPair::generate().unwrap();
    let mut params = leaf_params(sans);
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(10 * 86_400)).into();
    params.not_after = (now - Duration::from_secs(86_400)).into();
    let cert = params.self_signed(&key).unwrap();
    PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// A test certificate authority.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pair: PemPair,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let pair = PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        };
        Self {
            issuer: Issuer::new(params, key),
            pair,
        }
    }

    /// Reads back a CA written as PEM (the dev CA, for instance).
    pub(crate) fn from_files(paths: &CertPaths) -> Self {
        let cert = std::fs::read_to_string(&paths.cert).unwrap();
        let key = std::fs::read_to_string(&paths.key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key).unwrap()).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).unwrap();
        Self {
            issuer,
            pair: PemPair { cert, key, der },
        }
    }

    /// A server certificate for `sans`, signed by this CA.
    pub(crate) fn issue(&self, sans: &[&str]) -> PemPair {
        self.sign(leaf_params(sans))
    }

    /// A client certificate with the given subject CN and SANs.
    pub(crate) fn issue_client(&self, cn: &str, sans: Vec<SanType>) -> PemPair {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> PemPair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// The leaf certificate of a loaded pair.
pub(crate) fn leaf(key: &CertifiedKey) -> CertificateDer<'static> {
    key.end_entity_cert().unwrap().clone().into_owned()
}

/// What each side saw of one handshake.
pub(crate) struct Handshake {
    /// The client's view: the server's leaf certificate and the ALPN protocol.
    pub(crate) client: Result<(CertificateDer<'static>, Option<Vec<u8>>), std::io::Error>,
    /// The server's view: the client's certificate chain, if it sent one.
    pub(crate) server: Result<Option<Vec<CertificateDer<'static>>>, std::io::Error>,
}

/// Runs one TLS handshake over an in-memory pipe; `name` is the server name
/// the client connects to (an IP address sends no SNI).
pub(crate) async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Handshake {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();

    // Each side hands back its stream so neither is dropped (closing the
    // pipe) while the other is still finishing its half of the handshake.
    let server_side = async move {
        let stream = acceptor.accept(server_io).await?;
        let certs = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
        Ok::<_, std::io::Error>((certs, stream))
    };
    let client_side = async move {
        let stream = connector.connect(server_name, client_io).await?;
        let conn = stream.get_ref().1;
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| std::io::Error::other("server sent no certificate"))?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        Ok::<_, std::io::Error>(((leaf, alpn), stream))
    };
    let (client, server) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(client_side, server_side)
    })
    .await
    .expect("handshake timed out");
    let client = client.map(|(seen, _stream)| seen);
    let server = server.map(|(seen, _stream)| seen);
    Handshake { client, server }
}
