//! What a configuration runs as: the route table and the live clusters.
//!
//! A reload builds a new `Runtime` next to the old one and swaps it in
//! atomically; clusters whose settings did not change are carried over with
//! their warm pools, and requests or sessions already under way keep the
//! runtime they started with until they end.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Mode, UpstreamProtocol};
use crate::metrics::Metrics;
use crate::mux_bridge::MuxCluster;
use crate::router::Router;
use crate::session::SessionCtx;
pub use crate::stack::StackError;
use crate::stack::{FilterStates, RouteStack, StackCtx};
use crate::upstream::{Cluster, ClusterError, PoolNeeds};

/// What building a runtime needs besides the config.
pub(crate) struct BuildCtx<'a> {
    pub(crate) metrics: &'a Arc<Metrics>,
    pub(crate) filters: &'a FilterStates,
    pub(crate) sessions: &'a SessionCtx,
}

/// Why a configuration could not be made live.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A cluster could not start.
    #[error("clusters.{cluster}: {source}")]
    Cluster {
        /// The cluster's name.
        cluster: Arc<str>,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// A route's stack could not be built.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A route names a cluster that is not there.
    #[error("routes.{route}: no cluster {cluster}")]
    NoCluster {
        /// The route.
        route: Arc<str>,
        /// The cluster it names.
        cluster: Arc<str>,
    },
}

/// A configuration made live.
pub struct Runtime {
    config: Arc<Config>,
    router: Router,
    clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
    /// Mux connections of the clusters mux routes use, started and retired
    /// with their cluster.
    mux: BTreeMap<Arc<str>, Arc<MuxCluster>>,
    /// One stack per route, in config order.
    stacks: Vec<RouteStack>,
    /// A route takes WebSocket sessions (decided once per config, read
    /// for every accepted connection).
    takes_websockets: bool,
}

impl Runtime {
    /// Starts the clusters of `config`, reusing those of `previous` whose
    /// settings (and the pools their routes need) are unchanged.
    pub(crate) fn build(
        config: Arc<Config>,
        previous: Option<&Runtime>,
        ctx: &BuildCtx<'_>,
    ) -> Result<Self, RuntimeError> {
        let mut needs: BTreeMap<&str, PoolNeeds> = BTreeMap::new();
        for r in config.routes() {
            let n = needs.entry(r.cluster()).or_default();
            // A websocket route over an HTTP/2 cluster opens its sessions
            // as streams of the HTTP pool's connections (RFC 8441).
            let over_h2 = config
                .clusters()
                .get(r.cluster())
                .is_some_and(|c| c.protocol == UpstreamProtocol::Http2);
            match r.mode() {
                Mode::Http => n.http = true,
                Mode::WebSocket if over_h2 => n.http = true,
                Mode::WebSocket => n.raw = true,
                Mode::Mux => {
                    n.raw = true;
                    n.mux = true;
                }
            }
        }
        let mut clusters = BTreeMap::new();
        let mut mux = BTreeMap::new();
        for (name, cc) in config.clusters() {
            let need = needs.get(&**name).copied().unwrap_or_default();
            let reused = previous
                .and_then(|p| p.clusters.get(name).map(|c| (c, p.mux.get(name))))
                .filter(|(c, _)| c.config() == cc && c.needs() == need);
            let (cluster, muxed) = match reused {
                Some((c, m)) => (c.clone(), m.cloned()),
                None => {
                    let c = Arc::new(Cluster::start(cc, need).map_err(|source| RuntimeError::Cluster {
                        cluster: name.clone(),
                        source,
                    })?);
                    let m = need
                        .mux
                        .then(|| Arc::new(MuxCluster::start(c.endpoints(), &cc.mux, &ctx.metrics.mux(name))));
                    (c, m)
                }
            };
            if let Some(m) = muxed {
                mux.insert(name.clone(), m);
            }
            clusters.insert(name.clone(), cluster);
        }
        let stack_ctx = StackCtx {
            config: &config,
            states: ctx.filters,
            metrics: ctx.metrics,
            sessions: ctx.sessions,
        };
        let mut stacks = Vec::new();
        for r in config.routes() {
            let cluster = clusters
                .get(r.cluster())
                .cloned()
                .ok_or_else(|| RuntimeError::NoCluster {
                    route: r.name.clone(),
                    cluster: r.cluster.clone(),
                })?;
            let muxed = mux.get(r.cluster()).cloned();
            stacks.push(RouteStack::build(r, cluster, muxed, &stack_ctx)?);
        }
        ctx.filters.retain(|name| config.filters().contains_key(name));
        let takes_websockets = config
            .routes()
            .iter()
            .any(|r| matches!(r.mode, Mode::WebSocket | Mode::Mux));
        Ok(Self {
            router: Router::new(config.routes()),
            takes_websockets,
            config,
            clusters,
            mux,
            stacks,
        })
    }

    /// Closes the clusters (and their mux connections) of this runtime
    /// that `next` does not carry over.
    pub(crate) fn retire(&self, next: &Runtime) {
        for (name, c) in &self.clusters {
            if !next.clusters.get(name).is_some_and(|n| Arc::ptr_eq(n, c)) {
                if let Some(m) = self.mux.get(name) {
                    m.close();
                }
                c.close();
            }
        }
    }

    /// Closes every cluster and its mux connections (shutdown).
    pub(crate) fn close(&self) {
        for m in self.mux.values() {
            m.close();
        }
        for c in self.clusters.values() {
            c.close();
        }
    }

    /// Every route's stack, in config order.
    pub(crate) fn stacks(&self) -> &[RouteStack] {
        &self.stacks
    }

    /// The stack of the route at `index` in the config.
    pub(crate) fn stack(&self, index: usize) -> Option<&RouteStack> {
        self.stacks.get(index)
    }

    /// The route table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).cloned()
    }

    /// All clusters.
    pub fn clusters(&self) -> &BTreeMap<Arc<str>, Arc<Cluster>> {
        &self.clusters
    }

    /// Whether a route takes WebSocket sessions (websocket or mux mode):
    /// only then do listeners offer them over HTTP/2 (RFC 8441).
    pub fn takes_websockets(&self) -> bool {
        self.takes_websockets
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Fills the state gauges (pool connections by lifecycle state,
    /// waiters, endpoint health) from snapshots, at a scrape, rather than
    /// keeping them in step on every change.
    pub fn export_gauges(&self, m: &Metrics) {
        m.clear_pool_gauges();
        for (name, cluster) in &self.clusters {
            for ep in cluster.endpoints() {
                let mut waiters = 0;
                for (pool_name, pool) in [("http", ep.http.as_ref()), ("websocket", ep.raw.as_ref())] {
                    let Some(pool) = pool else { continue };
                    let s = pool.snapshot();
                    waiters += s.waiters;
                    m.set_pool_opened(name, ep.label(), pool_name, s.opened);
                    for state in crate::pool::LifeState::ALL {
                        m.set_pool_connections(name, ep.label(), pool_name, state.as_str(), s.get(state));
                    }
                }
                m.set_endpoint(name, ep.label(), !ep.is_ejected(), waiters);
            }
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("routes", &self.stacks.len())
            .field("clusters", &self.clusters.len())
            .finish()
    }
}
