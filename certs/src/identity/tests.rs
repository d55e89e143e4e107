use rcgen::SanType;
use rustls_pki_types::CertificateDer;

use crate::peer_identity;
use crate::test_support::TestCa;

#[test]
fn first_dns_or_uri_san_wins() {
    let ca = TestCa::new("id ca");
    let uri_first = ca.issue_client(
        "cn-name",
        vec![
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::URI("spiffe://agentmux/agent-7".try_into().unwrap()),
            SanType::DnsName("agent-7.agents.test".try_into().unwrap()),
        ],
    );
    assert_eq!(
        peer_identity(&uri_first.der).as_deref(),
        Some("spiffe://agentmux/agent-7")
    );
    let dns_first = ca.issue_client(
        "cn-name",
        vec![
            SanType::DnsName("agent-7.agents.test".try_into().unwrap()),
            SanType::URI("spiffe://agentmux/agent-7".try_into().unwrap()),
        ],
    );
    assert_eq!(peer_identity(&dns_first.der).as_deref(), Some("agent-7.agents.test"));
}

#[test]
fn common_name_is_the_fallback() {
    let ca = TestCa::new("id ca");
    let cn_only = ca.issue_client("agent-9", Vec::new());
    assert_eq!(peer_identity(&cn_only.der).as_deref(), Some("agent-9"));
    // An IP or e-mail SAN is not an identity; fall back to the CN.
    let ip_only = ca.issue_client("agent-10", vec![SanType::IpAddress("127.0.0.1".parse().unwrap())]);
    assert_eq!(peer_identity(&ip_only.der).as_deref(), Some("agent-10"));
}

#[test]
fn garbage_has_no_identity() {
    assert_eq!(peer_identity(&CertificateDer::from(vec![1, 2, 3])), None);
    assert_eq!(peer_identity(&CertificateDer::from(Vec::new())), None);
}
