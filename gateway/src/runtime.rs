//! What a configuration runs as: the route table and the live clusters.
//!
//! A reload builds a new `Runtime` next to the old one and swaps it in
//! atomically; clusters whose settings did not change are carried over with
//! their warm pools, and requests or sessions already under way keep the
//! runtime they started with until they end.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Mode};
use crate::router::Router;
use crate::upstream::{Cluster, PoolNeeds};

/// A configuration made live.
#[derive(Debug)]
pub struct Runtime {
    config: Arc<Config>,
    router: Router,
    clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
}

impl Runtime {
    /// Starts the clusters of `config`, reusing those of `previous` whose
    /// settings (and the pools their routes need) are unchanged.
    pub(crate) fn build(config: Arc<Config>, previous: Option<&Runtime>) -> Result<Self, String> {
        let mut needs: BTreeMap<&str, PoolNeeds> = BTreeMap::new();
        for r in config.routes() {
            let n = needs.entry(r.cluster()).or_default();
            match r.mode() {
                Mode::Http => n.http = true,
                Mode::WebSocket | Mode::Mux => n.raw = true,
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
                None => {
                    Arc::new(Cluster::start(cc, need).map_err(|e| format!("clusters.{name}: {e}"))?)
                }
            };
            clusters.insert(name.clone(), cluster);
        }
        Ok(Self {
            router: Router::new(config.routes()),
            config,
            clusters,
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
}
