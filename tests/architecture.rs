//! The gateway's shape, checked: data flows one way through its top-level
//! modules (no import cycle), and the protocol and config crates stand on
//! their own. A change that makes a lower module reach back up fails here.
//!
//! The graph: for each top-level module of `gateway/src` (a file or a
//! directory), every `crate::<module>` path named in its non-test code,
//! comments stripped. Strongly connected components of more than one
//! module are cycles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn gateway_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without a trailing `mod tests { … }`.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]\nmod tests {").map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = gateway_src();
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" || path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        modules.insert(name);
    }
    let mut graph = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        let dir = src.join(m);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{m}.rs")));
        }
        let mut deps = BTreeSet::new();
        for f in files {
            let text = code(&std::fs::read_to_string(&f).unwrap());
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if &name != m && modules.contains(&name) {
                    deps.insert(name);
                }
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// Modules that sit in a cycle (Tarjan's strongly connected components).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.graph[v] {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w.as_str()) {
                    let iw = self.index[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for m in graph.keys() {
        if !t.index.contains_key(m.as_str()) {
            t.visit(m);
        }
    }
    t.out
}

#[test]
fn the_gateway_s_top_level_modules_import_each_other_in_no_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 20, "found only {} modules: {graph:?}", graph.len());
    let found = cycles(&graph);
    let edges: Vec<String> = graph
        .iter()
        .filter(|(m, _)| found.iter().any(|c| c.contains(m)))
        .map(|(m, d)| format!("{m} -> {d:?}"))
        .collect();
    assert!(found.is_empty(), "import cycles: {found:?}\n{}", edges.join("\n"));
}

#[test]
fn the_endpoint_layer_and_the_session_lifecycle_are_the_only_ways_in() {
    // Session kinds pick endpoints and keep session books through the
    // endpoint layer and the session lifecycle only.
    let graph = module_graph();
    for kind in ["proxy", "ws", "mux_bridge"] {
        let deps = &graph[kind];
        assert!(
            deps.contains("endpoint"),
            "{kind} does not use the endpoint layer: {deps:?}"
        );
        for forbidden in ["stack", "runtime", "gateway", "listener", "server", "serve", "admin"] {
            assert!(!deps.contains(forbidden), "{kind} reaches up into {forbidden}");
        }
    }
    for kind in ["ws", "mux_bridge"] {
        assert!(
            graph[kind].contains("session"),
            "{kind} does not use the session lifecycle"
        );
    }
}

#[test]
fn protocol_and_config_crates_depend_on_no_gateway_code() {
    for krate in ["mux", "config"] {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../gateway/{krate}/Cargo.toml"));
        let text = std::fs::read_to_string(&manifest).unwrap();
        let deps = text.split("[dependencies]").nth(1).unwrap();
        let deps = deps.split("\n[").next().unwrap();
        assert!(
            !deps
                .lines()
                .any(|l| l.trim_start().starts_with("agentmux ") || l.trim_start().starts_with("agentmux.")),
            "{krate} depends on the gateway crate"
        );
    }
}
