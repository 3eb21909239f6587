//! The codebase's shape, checked: no import cycle between the crate's top-level modules, no
//! file under `src/` longer than 600 lines before its tests, and the pure policy core free of
//! I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`src/proxy/handler.rs` → `proxy`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The code of a file before its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The same without comment lines (doc links name modules without importing them).
fn statements(path: &Path) -> String {
    code(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(file) else {
            continue;
        };
        let deps = edges.entry(from.clone()).or_default();
        let text = statements(file);
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !to.is_empty() && to != from && to.chars().next().is_some_and(|c| c.is_lowercase()) {
                deps.insert(to);
            }
        }
    }
    edges
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let edges = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
    // The leaf, the API model and the pure core stay leaves.
    assert!(
        edges["domain"].is_empty(),
        "domain imports {:?}",
        edges["domain"]
    );
    assert!(
        edges["schema"].iter().all(|m| m == "domain"),
        "schema imports {:?}",
        edges["schema"]
    );
    assert!(
        edges["policy"]
            .iter()
            .all(|m| m == "domain" || m == "schema"),
        "policy imports {:?}",
        edges["policy"]
    );
}

#[test]
fn no_source_file_is_over_600_lines_before_its_tests() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = code(f).lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn the_policy_core_and_the_api_model_do_no_io_and_no_async() {
    let mut files = Vec::new();
    sources(&src().join("policy"), &mut files);
    sources(&src().join("schema"), &mut files);
    for file in files {
        let code = code(&file);
        for banned in [
            "async fn", ".await", "tokio::", "std::fs", "std::net", "hyper::",
        ] {
            assert!(!code.contains(banned), "{} uses {banned}", file.display());
        }
    }
}
