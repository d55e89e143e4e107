//! What a configuration runs as: the route table and the live clusters.
//!
//! A reload builds a new `Runtime` next to the old one and swaps it in
//! atomically; clusters whose settings did not change are carried over with
//! their warm pools, and requests or sessions already under way keep the
//! runtime they started with until they end.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Mode};
use crate::gateway::Sessions;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::stack::{FilterStates, RouteStack};
use crate::upstream::{Cluster, PoolNeeds};

/// What building a runtime needs besides the config.
pub(crate) struct BuildCtx<'a> {
    pub(crate) metrics: &'a Arc<Metrics>,
    pub(crate) filters: &'a FilterStates,
    pub(crate) sessions: &'a Sessions,
}

/// A configuration made live.
pub struct Runtime {
    config: Arc<Config>,
    router: Router,
    clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
    /// One stack per route, in config order.
    stacks: Vec<RouteStack>,
}

impl Runtime {
    /// Starts the clusters of `config`, reusing those of `previous` whose
    /// settings (and the pools their routes need) are unchanged.
    pub(crate) fn build(config: Arc<Config>, previous: Option<&Runtime>, ctx: &BuildCtx<'_>) -> Result<Self, String> {
        let mut needs: BTreeMap<&str, PoolNeeds> = BTreeMap::new();
        for r in config.routes() {
            let n = needs.entry(r.cluster()).or_default();
            match r.mode() {
                Mode::Http => n.http = true,
                Mode::WebSocket => n.raw = true,
                Mode::Mux => {
                    n.raw = true;
                    n.mux = true;
                }
            }
        }
        let mut clusters = BTreeMap::new();
        for (name, cc) in config.clusters() {
            let need = needs.get(&**name).copied().unwrap_or_default();
            let reused = previous
                .and_then(|p| p.clusters.get(name))
                .filter(|c| c.config() == cc && c.needs() == need)
                .cloned();
            let cluster = match reused {
                Some(c) => c,
                None => Arc::new(
                    Cluster::start(cc, need, &ctx.metrics.mux(name)).map_err(|e| format!("clusters.{name}: {e}"))?,
                ),
            };
            clusters.insert(name.clone(), cluster);
        }
        let mut stacks = Vec::new();
        for r in config.routes() {
            let cluster = clusters
                .get(r.cluster())
                .cloned()
                .ok_or_else(|| format!("routes.{}: no cluster {}", r.name(), r.cluster()))?;
            stacks.push(RouteStack::build(
                r,
                cluster,
                &config,
                ctx.filters,
                ctx.metrics,
                ctx.sessions,
            )?);
        }
        ctx.filters.retain(|name| config.filters().contains_key(name));
        Ok(Self {
            router: Router::new(config.routes()),
            config,
            clusters,
            stacks,
        })
    }

    /// Closes the clusters of this runtime that `next` does not carry over.
    pub(crate) fn retire(&self, next: &Runtime) {
        for (name, c) in &self.clusters {
            if !next.clusters.get(name).is_some_and(|n| Arc::ptr_eq(n, c)) {
                c.close();
            }
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
