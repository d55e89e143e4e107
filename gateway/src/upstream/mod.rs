//! Upstream clusters: endpoints, their pools and health, and the balancer
//! that picks one per request or session.

mod balance;
mod endpoint;
mod health;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub(crate) use balance::hash_bytes;
pub use endpoint::{ActiveGuard, Endpoint};

use crate::config::{ClusterConfig, ClusterKind, EndpointAddr, HashKey, Strategy, UpstreamProtocol};
use crate::connect::{self, Connector};
use crate::error::{Cause, ProxyError};
use crate::pool::{Flavor, Pool, PoolSnapshot};
use balance::Balancer;

/// Which kinds of pool a cluster needs, from the modes of the routes that
/// send to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolNeeds {
    /// Some route in `http` mode uses the cluster.
    pub http: bool,
    /// Some route in `websocket` or `mux` mode uses the cluster.
    pub raw: bool,
    /// Some route in `mux` mode uses the cluster.
    pub mux: bool,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    needs: PoolNeeds,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    shutdown: CancellationToken,
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Its upstream TLS settings could not be built.
    #[error("tls: {0}")]
    Tls(#[from] crate::connect::TlsError),
}

/// No endpoint could take the request.
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster} has no endpoints")]
pub struct NoEndpoint {
    /// The cluster.
    pub cluster: Arc<str>,
}

impl Cluster {
    /// Builds the cluster, starts its pools warming and its health checks.
    pub(crate) fn start(config: &ClusterConfig, needs: PoolNeeds) -> Result<Self, ClusterError> {
        let shutdown = CancellationToken::new();
        let mut endpoints = Vec::new();
        let targets: Vec<(Arc<str>, u32, Option<EndpointAddr>)> = match &config.kind {
            ClusterKind::Echo => vec![("echo".into(), 1, None)],
            ClusterKind::Static(eps) => eps
                .iter()
                .map(|e| (e.addr.to_string().into(), e.weight, Some(e.addr.clone())))
                .collect(),
        };
        for (label, weight, addr) in targets {
            let connector = |alpn: Vec<Vec<u8>>| -> Result<Connector, ClusterError> {
                let Some(addr) = &addr else {
                    return Ok(Connector::Echo);
                };
                let tls = match &config.tls {
                    None => None,
                    Some(t) => Some(connect::tls_connect(t.ca.as_deref(), t.sni.as_ref(), addr, alpn)?),
                };
                Ok(Connector::Net {
                    addr: addr.clone(),
                    tls,
                    timeout: config.connect_timeout,
                    keepalive: config.tcp_keepalive,
                })
            };
            let http_alpn = match config.protocol {
                UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
                UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            };
            let http_connector = connector(http_alpn)?;
            let http = needs.http.then(|| {
                Pool::new(
                    label.clone(),
                    Flavor::Http(config.protocol),
                    http_connector.clone(),
                    config.pool.clone(),
                )
            });
            let raw = if needs.raw {
                // WebSocket upgrades need HTTP/1.1 on the wire.
                Some(Pool::new(
                    label.clone(),
                    Flavor::Raw,
                    connector(vec![b"http/1.1".to_vec()])?,
                    config.pool.clone(),
                ))
            } else {
                None
            };
            let ep = Arc::new(Endpoint::new(label, weight, http, raw));
            tokio::spawn(health::run(
                ep.clone(),
                http_connector,
                config.protocol,
                config.health.clone(),
                config.pool.health_check_interval,
                shutdown.child_token(),
            ));
            endpoints.push(ep);
        }
        let balancer = Balancer::new(&config.strategy, &endpoints);
        Ok(Self {
            config: config.clone(),
            needs,
            endpoints,
            balancer,
            shutdown,
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration it runs.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The pools it was started with.
    pub fn needs(&self) -> PoolNeeds {
        self.needs
    }

    /// Its endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The session key that consistent hashing reads, if that is the strategy.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.config.strategy {
            Strategy::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }

    /// Picks an endpoint; `key` is the hashed session key for affinity.
    pub fn pick(&self, key: Option<u64>) -> Result<&Arc<Endpoint>, NoEndpoint> {
        self.balancer
            .pick(&self.endpoints, key)
            .and_then(|i| self.endpoints.get(i))
            .ok_or_else(|| NoEndpoint {
                cluster: self.config.name.clone(),
            })
    }

    /// Picks among the endpoints `allowed` admits (by index).
    pub(crate) fn pick_where(
        &self,
        key: Option<u64>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<(usize, &Arc<Endpoint>)> {
        let i = self.balancer.pick_where(&self.endpoints, key, allowed)?;
        self.endpoints.get(i).map(|e| (i, e))
    }

    /// Pool counts summed over endpoints.
    pub fn pool_snapshot(&self) -> PoolSnapshot {
        let mut total = PoolSnapshot::default();
        for ep in &self.endpoints {
            for p in ep.pools() {
                total.add(&p.snapshot());
            }
        }
        total
    }

    /// Stops health checks and closes every pool (cluster removed).
    pub fn close(&self) {
        self.shutdown.cancel();
        for ep in &self.endpoints {
            for p in ep.pools() {
                p.close();
            }
        }
    }

    /// Whether every pool holds its minimum of connections (for /readyz).
    pub fn is_warm(&self) -> bool {
        self.endpoints.iter().filter(|e| !e.is_ejected()).all(|e| {
            e.pools().all(|p| {
                let s = p.snapshot();
                s.ready + s.idle + s.active >= p.params().min_connections()
            })
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl From<NoEndpoint> for ProxyError {
    fn from(e: NoEndpoint) -> Self {
        ProxyError::new(Cause::NoEndpoint, "no upstream endpoint available").with_source(e)
    }
}
