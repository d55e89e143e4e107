//! A compact set of HTTP status codes, used to classify responses as
//! failures (circuit breaker) or retryable (retry).

use http::StatusCode;

/// A set of HTTP status codes, stored as a bitset over 100..=999 so a
/// membership test on the hot path is one shift and one mask.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 16],
}

impl StatusSet {
    /// The empty set.
    pub const fn empty() -> Self {
        Self { bits: [0; 16] }
    }

    /// The gateway-error set: 502, 503 and 504. The default failure set of
    /// the circuit breaker and the default retryable set of the retry filter.
    pub fn gateway_errors() -> Self {
        [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ]
        .into_iter()
        .collect()
    }

    /// Adds `status` to the set.
    pub fn insert(&mut self, status: StatusCode) {
        let code = usize::from(status.as_u16());
        self.bits[code / 64] |= 1 << (code % 64);
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: StatusCode) -> bool {
        let code = usize::from(status.as_u16());
        self.bits[code / 64] & (1 << (code % 64)) != 0
    }

    /// The codes in the set, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = StatusCode> + '_ {
        (100u16..1000)
            .filter_map(|c| StatusCode::from_u16(c).ok())
            .filter(|s| self.contains(*s))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::gateway_errors()
    }
}

impl FromIterator<StatusCode> for StatusSet {
    fn from_iter<I: IntoIterator<Item = StatusCode>>(iter: I) -> Self {
        let mut set = Self::empty();
        for status in iter {
            set.insert(status);
        }
        set
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|s| s.as_u16())).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let set = StatusSet::gateway_errors();
        assert!(set.contains(StatusCode::BAD_GATEWAY));
        assert!(set.contains(StatusCode::GATEWAY_TIMEOUT));
        assert!(!set.contains(StatusCode::OK));
        assert!(!set.contains(StatusCode::INTERNAL_SERVER_ERROR));
        let all: Vec<u16> = set.iter().map(|s| s.as_u16()).collect();
        assert_eq!(all, [502, 503, 504]);
        let custom: StatusSet = [StatusCode::from_u16(999).unwrap()].into_iter().collect();
        assert!(custom.contains(StatusCode::from_u16(999).unwrap()));
    }
}
