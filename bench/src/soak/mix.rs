//! The churn mix: which kinds of session the soak opens and how often.
//! Every slot draws its next operation from the weights, so over a long
//! run each kind's share of operations matches its weight whatever the
//! operations cost in time.

use std::fmt;

/// One kind of churn operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// WebSocket opened, a few messages echoed, closed with 1000.
    WsClean,
    /// WebSocket opened, then left silent (not read, not written) until the
    /// gateway's keepalive reaps it, then dropped with a reset.
    WsHalfOpen,
    /// WebSocket opened, then one frame that breaks RFC 6455.
    WsViolation,
    /// HTTP/1.1 requests on a reused keep-alive connection.
    HttpKeepalive,
    /// HTTP connections opened and dropped (idle, before the response, mid-body).
    HttpDrop,
    /// HTTP request heads dripped a byte at a time (slowloris).
    HttpSlowloris,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 6] = [
        Kind::WsClean,
        Kind::WsHalfOpen,
        Kind::WsViolation,
        Kind::HttpKeepalive,
        Kind::HttpDrop,
        Kind::HttpSlowloris,
    ];

    /// The name used in `--mix` and the report.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::WsClean => "ws_clean",
            Kind::WsHalfOpen => "ws_half_open",
            Kind::WsViolation => "ws_violation",
            Kind::HttpKeepalive => "http_keepalive",
            Kind::HttpDrop => "http_drop",
            Kind::HttpSlowloris => "http_slowloris",
        }
    }
}

/// Weights per kind; at least one is positive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mix {
    weights: Vec<(Kind, u32)>,
    total: u32,
}

impl Mix {
    /// Parses `kind=weight,...`; kinds left out weigh 0.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut weights: Vec<(Kind, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected kind=weight"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.as_str() == name.trim())
                .ok_or_else(|| format!("unknown churn kind `{}`", name.trim()))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(format!("churn kind `{}` given twice", kind.as_str()));
            }
            if weight > 1_000_000 {
                return Err(format!("`{part}`: weight too large"));
            }
            weights.push((kind, weight));
        }
        weights.sort();
        let total = weights.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return Err("the churn mix needs at least one positive weight".into());
        }
        Ok(Self { weights, total })
    }

    /// Sum of the weights (a draw is a number below it).
    #[cfg(test)]
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// The kind a draw `r` in `0..total()` selects (larger draws wrap).
    pub(crate) fn pick(&self, r: u32) -> Kind {
        let mut r = r % self.total;
        for (kind, weight) in &self.weights {
            if r < *weight {
                return *kind;
            }
            r -= weight;
        }
        // Unreachable while total is the sum of the weights; any kind will do.
        self.weights.first().map_or(Kind::WsClean, |(k, _)| *k)
    }

    /// A random kind.
    pub(crate) fn draw(&self) -> Kind {
        self.pick(rand::random_range(0..self.total))
    }

    /// The weight of `kind` (0 when absent).
    #[cfg(test)]
    pub(crate) fn weight(&self, kind: Kind) -> u32 {
        self.weights.iter().find(|(k, _)| *k == kind).map_or(0, |(_, w)| *w)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(k, w)| format!("{}={w}", k.as_str()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_picks_by_weight() {
        let mix = Mix::parse("ws_clean=3, http_drop=1,ws_half_open=0").unwrap();
        assert_eq!(mix.total(), 4);
        let picks: Vec<Kind> = (0..4).map(|r| mix.pick(r)).collect();
        assert_eq!(picks, [Kind::WsClean, Kind::WsClean, Kind::WsClean, Kind::HttpDrop]);
        // A zero weight is never picked; draws wrap.
        assert_eq!(mix.pick(7), Kind::HttpDrop);
        assert_eq!(mix.weight(Kind::WsHalfOpen), 0);
        assert_eq!(mix.weight(Kind::HttpSlowloris), 0);
        assert_eq!(mix.to_string(), "ws_clean=3,ws_half_open=0,http_drop=1");
    }

    #[test]
    fn every_kind_gets_its_share_of_draws() {
        let mix =
            Mix::parse("ws_clean=40,ws_half_open=5,ws_violation=10,http_keepalive=30,http_drop=10,http_slowloris=5")
                .unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for r in 0..mix.total() {
            *counts.entry(mix.pick(r)).or_insert(0u32) += 1;
        }
        for kind in Kind::ALL {
            assert_eq!(counts[&kind], mix.weight(kind), "{kind:?}");
        }
        // Random draws land on every kind.
        let drawn: std::collections::BTreeSet<Kind> = (0..2000).map(|_| mix.draw()).collect();
        assert_eq!(drawn.len(), Kind::ALL.len());
    }

    #[test]
    fn rejects_bad_mixes() {
        assert!(Mix::parse("").is_err());
        assert!(Mix::parse("ws_clean=0").is_err());
        assert!(Mix::parse("ws_clean").is_err());
        assert!(Mix::parse("ws_dirty=1").is_err());
        assert!(Mix::parse("ws_clean=-1").is_err());
        assert!(Mix::parse("ws_clean=1,ws_clean=2").is_err());
    }
}
