//! The codebase's shape, checked: no import cycle between the crate's top-level modules nor
//! between the files of any folder, no file under `src/` longer than 600 lines before its tests,
//! the pure policy core free of I/O, and the decision written only by the policy.

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
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" → "));
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

/// A file's module path (`src/proxy/admit.rs` → `[proxy, admit]`, `src/proxy/mod.rs` →
/// `[proxy]`, `src/lib.rs` → `[]`).
fn module_path(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn ident_at(text: &str, at: usize) -> (String, usize) {
    let name: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let end = at + name.len();
    (name, end)
}

/// The paths a use-tree or an inline path names, from `at` (just after a `::`), each appended
/// to `prefix`: `{a, b::{c, D}}` gives `a`, `b::c`, `b::D`.
fn paths_from(text: &str, at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |mut i: usize| {
        while text[i..].starts_with(char::is_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(at);
    if text[i..].starts_with('{') {
        i += 1;
        loop {
            i = skip_ws(i);
            if text[i..].starts_with('}') {
                return i + 1;
            }
            i = paths_from(text, i, prefix.clone(), out);
            i = skip_ws(i);
            if text[i..].starts_with(',') {
                i += 1;
            }
            if i >= text.len() {
                return i;
            }
        }
    }
    let (name, end) = ident_at(text, i);
    if name.is_empty() {
        // `*` or something unparsed: the prefix is what is named.
        out.push(prefix);
        return end.max(i + 1);
    }
    let mut path = prefix;
    path.push(name);
    if text[end..].starts_with("::") {
        paths_from(text, end + 2, path, out)
    } else {
        out.push(path);
        end
    }
}

/// Every absolute module path a file names with `crate::`, `super::` or `self::`.
fn named_paths(file: &Path) -> Vec<Vec<String>> {
    let module = module_path(file);
    let text = statements(file);
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        let (word, end) = ident_at(&text, i);
        if word.is_empty() {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        if !boundary || !text[end..].starts_with("::") {
            i = end;
            continue;
        }
        // `self` in a file is its own module; `super` is its parent (a `mod.rs` is its folder).
        let mut base: Vec<String> = match word.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => {
                let mut b = module.clone();
                b.pop();
                b
            }
            _ => {
                i = end;
                continue;
            }
        };
        let mut at = end + 2;
        while text[at..].starts_with("super::") {
            base.pop();
            at += "super::".len();
        }
        i = paths_from(&text, at, base, &mut out);
    }
    out
}

/// Edges between sibling modules: for each folder (the crate root included), which of its
/// files and subfolders import which.
fn sibling_graph() -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let mut folders: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let from = module_path(file);
        for to in named_paths(file) {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            let (Some(a), Some(b)) = (from.get(common), to.get(common)) else {
                continue; // a module naming its own descendants or ancestors
            };
            let folder = from[..common].to_vec();
            let mut sibling = folder.clone();
            sibling.push(b.clone());
            if !modules.contains(&sibling) {
                continue; // an item of the folder's own `mod.rs`, not a sibling file
            }
            folders
                .entry(folder)
                .or_default()
                .entry(a.clone())
                .or_default()
                .insert(b.clone());
        }
    }
    folders
}

/// The first cycle in a directed graph, as the path that closes it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
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
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// Whether `to` can be reached from `from` along the edges.
fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(node) = todo.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node.clone()) {
            todo.extend(edges.get(&node).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn the_files_of_each_folder_import_each_other_without_cycles() {
    let folders = sibling_graph();
    assert!(
        folders.contains_key(&vec!["proxy".to_string()]),
        "the scanner sees the proxy folder's imports: {:?}",
        folders.keys().collect::<Vec<_>>()
    );
    // Every import that closes a circle, so one run lists all there is to untangle.
    let mut cycles = Vec::new();
    for (folder, edges) in folders.iter().filter(|(folder, _)| !folder.is_empty()) {
        for (from, tos) in edges {
            for to in tos {
                if reaches(edges, to, from) {
                    cycles.push(format!("src/{}/: {from} → {to}", folder.join("/")));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles among sibling files: {cycles:#?}"
    );
}

#[test]
fn the_request_phases_import_no_other_phase() {
    const PHASES: [&str; 7] = [
        "handler", "admit", "facts", "decide", "enforce", "forward", "learn",
    ];
    let folders = sibling_graph();
    let proxy = &folders[&vec!["proxy".to_string()]];
    assert!(
        proxy["handler"].contains("admit"),
        "the scanner sees the handler call its phases: {:?}",
        proxy["handler"]
    );
    for phase in &PHASES[1..] {
        let other: Vec<&String> = proxy
            .get(*phase)
            .into_iter()
            .flatten()
            .filter(|m| PHASES.contains(&m.as_str()))
            .collect();
        assert!(
            other.is_empty(),
            "proxy/{phase}.rs imports the phase(s) {other:?}: move what they share below both"
        );
    }
}

#[test]
fn the_path_scanner_reads_use_trees_and_inline_paths() {
    let mut out = Vec::new();
    let text = "{a, b::{c, D}, e::*}";
    paths_from(text, 0, vec!["p".into()], &mut out);
    let joined: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["p::a", "p::b::c", "p::b::D", "p::e"]);
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

/// Writes to a `Decision`'s fields in `text`: an assignment to, or a mutating call on,
/// `decision.matches` / `.reject` / `.edits`, a whole `x.decision = …`, or a `&mut` borrow of a
/// decision handed elsewhere. Calls of `Decision`'s own methods (written in `src/policy/`) are
/// the policy's writes, not these.
fn decision_writes(text: &str) -> Vec<String> {
    const MUTATORS: [&str; 14] = [
        "push(",
        "splice(",
        "retain(",
        "clear(",
        "insert(",
        "extend(",
        "truncate(",
        "pop(",
        "remove(",
        "drain(",
        "sort",
        "iter_mut(",
        "get_mut(",
        "take(",
    ];
    let mut found = Vec::new();
    for line in text.lines() {
        let squashed: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
        for (at, _) in squashed.match_indices("decision") {
            let before = &squashed[..at];
            let after = &squashed[at + "decision".len()..];
            if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                || before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                continue; // part of another name (`decisions`, `DecisionLabel`)
            }
            let borrowed = before.ends_with("&mut ")
                || before.ends_with("&mut self.")
                || before
                    .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    .ends_with("&mut ");
            let field = ["matches", "reject", "edits"]
                .iter()
                .find_map(|f| after.strip_prefix('.').and_then(|a| a.strip_prefix(f)));
            let written = match field {
                Some(rest) => {
                    (rest.starts_with(" =") && !rest.starts_with(" =="))
                        || rest.starts_with(" +=")
                        || MUTATORS
                            .iter()
                            .any(|m| rest.strip_prefix('.').is_some_and(|r| r.starts_with(m)))
                        || rest.strip_prefix(".as_mut()").is_some()
                }
                None => {
                    before.ends_with('.') && after.starts_with(" =") && !after.starts_with(" ==")
                }
            };
            if borrowed || written {
                found.push(line.trim().to_string());
            }
        }
    }
    found
}

#[test]
fn the_decision_write_scanner_finds_writes_and_not_reads() {
    for write in [
        "ctx.decision.matches.push(Match { rule, action });",
        "ctx.decision.reject = Some(rejection);",
        "ctx.decision.edits.retain(|e| e != edit);",
        "let earlier = std::mem::replace(&mut ctx.decision, settled.decision);",
        "ctx.decision = settled;",
    ] {
        assert_eq!(decision_writes(write).len(), 1, "{write}");
    }
    for read in [
        "if ctx.decision.reject.is_some() || !ctx.decision.edits.is_empty() {",
        "ctx.decision.request_finding(rule, action, message);",
        "decision = label.as_str(),",
        "let decision = match outcome {",
        "if decision == DecisionLabel::Rejected {",
        "for m in &ctx.decision.matches {",
    ] {
        assert!(decision_writes(read).is_empty(), "{read}");
    }
}

#[test]
fn only_the_policy_writes_the_decision() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let policy = src().join("policy");
    let writes: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&policy))
        .flat_map(|f| {
            decision_writes(&statements(f))
                .into_iter()
                .map(move |w| format!("{}: {w}", f.display()))
        })
        .collect();
    assert!(
        writes.is_empty(),
        "the decision is written outside src/policy/ (add a method to `Decision` there): {writes:#?}"
    );
}
