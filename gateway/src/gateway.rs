//! The gateway's shared state: the runtime serving requests now, reloads,
//! the metrics, the filters' state and the sessions under way. Built by
//! [`crate::server`]; listeners and the admin API hold it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Body;
use crate::cluster_state::ClusterState;
use crate::config::{Config, ConfigVersion};
use crate::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::runtime::{BuildCtx, Runtime};
use crate::session::SessionCtx;
use crate::stack::FilterStates;

/// The gateway's shared state, reachable from every connection task.
pub struct Gateway {
    pub(crate) runtime: ArcSwap<Runtime>,
    /// Where the config came from, for reloads.
    pub(crate) config_path: Option<std::path::PathBuf>,
    /// One reload at a time.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    pub(crate) started: Instant,
    pub(crate) sessions: SessionCtx,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) filters: FilterStates,
    pub(crate) tracing: Option<Arc<crate::telemetry::Tracing>>,
    pub(crate) access_log: bool,
    pub(crate) analytics: Option<crate::analytics::AnalyticsHandle>,
    /// State shared with other instances, when `[cluster_state]` is set.
    pub(crate) cluster: Option<Arc<ClusterState>>,
    /// The version (file hash) of the config running now, when it came
    /// from a file.
    pub(crate) config_version: std::sync::Mutex<Option<ConfigVersion>>,
}

impl Gateway {
    /// The runtime serving new requests now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Answers one agent request with the current runtime.
    pub(crate) async fn handle(&self, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
        crate::serve::handle(
            self.runtime(),
            conn,
            req,
            self.tracing.as_deref(),
            self.access_log,
            &self.metrics,
        )
        .await
    }

    /// Swaps in a new configuration: clusters whose settings did not
    /// change keep their warm pools; work in flight finishes on the old one.
    pub fn swap_config(&self, config: Config) -> Result<(), crate::runtime::RuntimeError> {
        let old = self.runtime();
        let ctx = BuildCtx {
            metrics: &self.metrics,
            filters: &self.filters,
            sessions: &self.sessions,
        };
        let next = Arc::new(Runtime::build(Arc::new(config), Some(&old), &ctx)?);
        self.runtime.store(next.clone());
        old.retire(&next);
        Ok(())
    }

    /// The live sessions.
    pub fn sessions(&self) -> &Arc<crate::session::list::SessionList> {
        &self.sessions.list
    }

    /// Re-reads the config file and swaps it in: validated first (nothing
    /// changes when it fails, and the errors name the key paths), clusters
    /// with unchanged settings keep their warm pools, filters keep their
    /// state, sessions under way continue. Listener, admin and
    /// cluster-state settings need a restart; a reload that changes them
    /// is refused. With `[cluster_state]`, a successful reload is announced
    /// to the other instances, which reload their own copy of the file.
    pub async fn reload(&self) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let (report, version) = self.reload_file().await?;
        if let Some(c) = &self.cluster {
            c.announce_config(&version);
        }
        Ok(report)
    }

    async fn reload_file(&self) -> Result<(ReloadReport, ConfigVersion), crate::config::ConfigErrors> {
        let _one = self.reloading.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Err(crate::config::ConfigErrors::single(
                "<none>",
                "",
                "the gateway was not started from a file",
            ));
        };
        let loaded = tokio::task::spawn_blocking(move || Config::load_versioned(&path)).await;
        let loaded = match loaded {
            Ok(r) => r,
            Err(e) => Err(crate::config::ConfigErrors::single("<reload>", "", e.to_string())),
        };
        let result = loaded.and_then(|(c, v)| self.apply(c).map(|r| (r, v)));
        self.metrics.reload(result.is_ok());
        if let Ok((_, v)) = &result {
            *self.version_slot() = Some(v.clone());
        }
        result
    }

    fn version_slot(&self) -> std::sync::MutexGuard<'_, Option<ConfigVersion>> {
        self.config_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version (SHA-256 of the file) of the config running now, when it
    /// came from a file.
    pub fn config_version(&self) -> Option<ConfigVersion> {
        self.version_slot().clone()
    }

    /// Moves to config `version`, announced by a peer: reloads when this
    /// instance's file has that version, else reports that it does not
    /// (yet: a ConfigMap update reaches each pod's volume in its own time).
    pub(crate) async fn follow(&self, version: &str) -> Follow {
        if self.config_version().is_some_and(|v| v.as_str() == version) {
            return Follow::Done;
        }
        let Some(path) = self.config_path.clone() else {
            return Follow::Done;
        };
        let file = tokio::task::spawn_blocking(move || ConfigVersion::of_file(&path)).await;
        if !matches!(file, Ok(Ok(v)) if v.as_str() == version) {
            return Follow::NotYet;
        }
        match self.reload_file().await {
            Ok((r, v)) => {
                tracing::info!(
                    version = %v,
                    kept = r.clusters_kept,
                    started = r.clusters_started,
                    "configuration reloaded to the version a peer announced"
                );
                if v.as_str() == version {
                    Follow::Done
                } else {
                    Follow::NotYet
                }
            }
            Err(e) => {
                tracing::warn!(
                    "a peer announced a config version this instance refuses; the running configuration stays: {e}"
                );
                Follow::Done
            }
        }
    }

    /// Opens the circuit `scope` of breaker `filter` because a peer's
    /// opened (circuits this instance does not have are left alone).
    pub(crate) fn trip(&self, filter: &str, scope: &str) {
        for (name, set) in self.filters.breakers() {
            if &*name == filter
                && let Some(c) = set.existing(scope)
            {
                tracing::debug!(filter, scope, "opening a circuit a peer opened");
                c.trip();
            }
        }
    }

    /// State shared with other instances, when configured.
    pub fn cluster_state(&self) -> Option<&Arc<ClusterState>> {
        self.cluster.as_ref()
    }

    fn apply(&self, config: Config) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let old = self.runtime();
        let origin = self
            .config_path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        if config.listeners() != old.config().listeners() || config.admin != old.config().admin {
            return Err(crate::config::ConfigErrors::single(
                &origin,
                "listeners",
                "listener and admin settings apply at start; restart the gateway to change them",
            ));
        }
        if config.cluster_state != old.config().cluster_state {
            return Err(crate::config::ConfigErrors::single(
                &origin,
                "cluster_state",
                "cluster_state settings apply at start; restart the gateway to change them",
            ));
        }
        let kept = config
            .clusters()
            .iter()
            .filter(|(n, c)| old.cluster(n).is_some_and(|o| o.config() == *c))
            .count();
        let total = config.clusters().len();
        self.swap_config(config)
            .map_err(|e| crate::config::ConfigErrors::single(&origin, "", e.to_string()))?;
        Ok(ReloadReport {
            clusters_kept: kept,
            clusters_started: total - kept,
        })
    }

    /// Every circuit-breaker filter's circuits.
    pub(crate) fn circuit_breakers(&self) -> Vec<(Arc<str>, Arc<crate::stack::BreakerSet>)> {
        self.filters.breakers()
    }

    /// The analytics engine's handle, when analytics is on.
    pub fn analytics(&self) -> Option<&crate::analytics::AnalyticsHandle> {
        self.analytics.as_ref()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How long the gateway has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What a reload changed.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Clusters carried over with their warm pools.
    pub clusters_kept: usize,
    /// Clusters started anew (new or changed).
    pub clusters_started: usize,
}

/// What following a peer's config version came to.
pub(crate) enum Follow {
    /// Running that version now, or it cannot be followed (refused, no file).
    Done,
    /// This instance's file does not have that version yet.
    NotYet,
}
