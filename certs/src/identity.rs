//! The name of a client that authenticated with a certificate (mTLS).
//!
//! rustls has already verified the chain when the gateway asks; this only
//! reads the name the auth filter keys on. SPIFFE-style URIs and DNS names in
//! subjectAltName come first because that is where modern issuers put
//! identities; the subject common name is the fallback for older PKIs.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

#[cfg(test)]
mod tests;

/// Identity of a verified client certificate: the first DNS or URI
/// subjectAltName (in certificate order), else the subject common name.
/// `None` if the certificate cannot be parsed or carries no such name.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let from_san = parsed.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::URI(s) if !s.is_empty() => Some((*s).to_owned()),
            _ => None,
        })
    });
    from_san.or_else(|| {
        parsed
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().map(str::to_owned))
            .filter(|cn| !cn.is_empty())
    })
}
