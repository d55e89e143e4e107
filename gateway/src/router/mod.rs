//! Picks the route for a request: host, then path prefix, then headers.
//!
//! Routes are ordered once, most specific first, and the first whose
//! conditions all hold wins:
//!
//! 1. host: an exact host beats a `*.suffix` wildcard (a longer suffix beats
//!    a shorter one), which beats no host condition;
//! 2. then the longer path prefix;
//! 3. then more header conditions;
//! 4. ties keep file order.
//!
//! Path prefixes match on segment boundaries against the raw path (no
//! percent-decoding): `/ws` takes `/ws` and `/ws/x` but not `/wsx`.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::HeaderMap;

use crate::config::{HostMatch, RouteConfig, RouteMatch};

/// The compiled route table.
#[derive(Debug)]
pub struct Router {
    /// Routes in match order, each with its index in the config file.
    routes: Vec<(Arc<RouteConfig>, usize)>,
}

impl Router {
    /// Orders the routes by specificity.
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut routes: Vec<_> = routes.iter().cloned().map(Arc::new).zip(0..).collect();
        // Stable sort: equal specificity keeps file order.
        routes.sort_by_key(|(r, _)| std::cmp::Reverse(specificity(&r.matcher)));
        Self { routes }
    }

    /// The route for a request, if any. `host` is the `Host` header or
    /// `:authority`, port allowed.
    pub fn route(&self, host: Option<&str>, path: &str, headers: &HeaderMap) -> Option<&Arc<RouteConfig>> {
        self.find(host, path, headers).map(|(r, _)| r)
    }

    /// Like [`Router::route`], with the route's index in the config file.
    pub fn find(&self, host: Option<&str>, path: &str, headers: &HeaderMap) -> Option<(&Arc<RouteConfig>, usize)> {
        let host = host.map(normalize_host);
        self.routes
            .iter()
            .find(|(r, _)| matches(&r.matcher, host.as_deref(), path, headers))
            .map(|(r, i)| (r, *i))
    }

    /// The routes in match order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<RouteConfig>> {
        self.routes.iter().map(|(r, _)| r)
    }
}

fn specificity(m: &RouteMatch) -> (u8, usize, usize, usize) {
    let (rank, len) = match &m.host {
        Some(HostMatch::Exact(h)) => (2, h.len()),
        Some(HostMatch::Suffix(s)) => (1, s.len()),
        None => (0, 0),
    };
    (rank, len, m.path_prefix.len(), m.headers.len())
}

fn matches(m: &RouteMatch, host: Option<&str>, path: &str, headers: &HeaderMap) -> bool {
    let host_ok = match (&m.host, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostMatch::Exact(want)), Some(h)) => want == h,
        (Some(HostMatch::Suffix(suffix)), Some(h)) => h.len() > suffix.len() && h.ends_with(suffix.as_str()),
    };
    host_ok
        && path_matches(&m.path_prefix, path)
        && m.headers.iter().all(|hm| match &hm.value {
            None => headers.contains_key(&hm.name),
            Some(v) => headers.get_all(&hm.name).iter().any(|got| got == v),
        })
}

fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Lower-cases a host and strips its port and a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}
