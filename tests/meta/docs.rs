//! The README against what it documents: every performance figure it quotes comes from the
//! committed benchmark results, the commands table names every command and flag the binary
//! takes, every in-README reference ("see X", `#anchor` links) names a heading that exists, and
//! the rule table is the rule catalogue.

use std::path::Path;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect(file)
}

/// Numbers followed by a performance unit: `0.48×`, `43161 vs 89199 rps`, `23.1 CPU ms`,
/// `59.4 MB`, `21 µs`.
fn figures(text: &str) -> Vec<String> {
    const UNITS: [&str; 7] = ["×", " rps", " CPU ms", " MB", " µs", " req/s", "% of"];
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b',')
            {
                i += 1;
            }
            let number = text[start..i].trim_end_matches(['.', ',']).to_string();
            let rest = &text[i..];
            // "43161 vs 89199 rps": both numbers are figures.
            let unit_follows = UNITS.iter().any(|u| rest.starts_with(u))
                || rest.starts_with(" vs ")
                    && rest[4..]
                        .split(' ')
                        .nth(1)
                        .is_some_and(|w| w.starts_with("rps"));
            if unit_follows {
                out.push(number);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_performance_figure_in_the_readme_is_from_the_committed_results() {
    let readme = read("README.md");
    // The committed runs: the benchmark, the stalled-reader measurement, the soak and the
    // callback throughput, the API-model before / after run, the engines' run and the native
    // engine's measurements.
    let results = [
        "bench/results.md",
        "bench/stalled.md",
        "bench/soak.md",
        "bench/callbacks.md",
        "bench/api-model.md",
        "bench/engines.md",
        "bench/native.md",
    ]
    .map(read)
    .concat()
    .replace(',', "");
    let found = figures(&readme);
    assert!(
        found.len() >= 10,
        "the README quotes the results: {found:?}"
    );
    let missing: Vec<&String> = found
        .iter()
        .filter(|n| !results.contains(&n.replace(',', "")))
        .collect();
    assert!(
        missing.is_empty(),
        "README figures not in the committed results (bench/*.md): {missing:?}"
    );
}

#[test]
fn the_figure_scanner_finds_what_it_should() {
    assert_eq!(
        figures("at 0.48× nginx (43161 vs 89199 rps), 23.1 CPU ms, 59.4 MB, 2 cores"),
        ["0.48", "43161", "89199", "23.1", "59.4"]
    );
}

#[test]
fn the_commands_table_names_every_command_and_flag() {
    let readme = read("README.md");
    let table: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Commands"))
        .take_while(|l| !l.starts_with("## Configuration"))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "modegate serve",
        "modegate check-config",
        "modegate simulate",
        "modegate demo",
        "modegate report",
        "--config",
        "--listen",
        "--admin-listen",
        "--seed",
        "--admin",
    ] {
        assert!(table.contains(needle), "the commands table omits {needle}");
    }
}

/// The README's prose: every line outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The README's headings (any level), without their `#`s.
fn headings(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// What each "see …" in the prose points at: the words after it, up to the end of the clause.
fn see_references(text: &str) -> Vec<String> {
    let joined = prose(text).join(" ");
    let mut out = Vec::new();
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("ee ") {
        let before = &rest[..at];
        let starts_word = before.ends_with('s') || before.ends_with('S');
        let word_start = before.len().checked_sub(1);
        let boundary = word_start
            .map(|i| i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric())
            .unwrap_or(false);
        rest = &rest[at + 3..];
        if starts_word && boundary {
            let end = rest.find([')', '.', ',', ';', ':']).unwrap_or(rest.len());
            // A link's target may hold full stops: keep it whole.
            let target = if rest.starts_with('[') {
                rest.find(')').map_or(rest, |e| &rest[..=e])
            } else {
                &rest[..end]
            };
            out.push(target.trim().to_string());
        }
    }
    out
}

#[test]
fn every_see_reference_in_the_readme_names_a_heading_or_is_a_link() {
    let readme = read("README.md");
    let headings = headings(&readme);
    let refs = see_references(&readme);
    assert!(
        refs.len() >= 10,
        "the README refers to its sections: {refs:?}"
    );
    let dangling: Vec<&String> = refs
        .iter()
        .filter(|r| !r.starts_with('[') && !headings.contains(r))
        .collect();
    assert!(
        dangling.is_empty(),
        "\"see X\" must name a README heading exactly (anything else is a link): {dangling:?}; \
         headings: {headings:?}"
    );
}

#[test]
fn every_anchor_link_in_the_readme_names_a_heading() {
    let readme = read("README.md");
    let anchors: Vec<String> = headings(&readme).iter().map(|h| anchor(h)).collect();
    let broken: Vec<&str> = readme
        .match_indices("](#")
        .map(|(i, _)| {
            let rest = &readme[i + 3..];
            &rest[..rest.find(')').unwrap_or(rest.len())]
        })
        .filter(|a| !anchors.iter().any(|h| h == a))
        .collect();
    assert!(broken.is_empty(), "links to no heading: {broken:?}");
}

#[test]
fn every_relative_link_in_the_readme_names_a_file_in_the_repository() {
    let readme = read("README.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = readme
        .match_indices("](")
        .map(|(i, _)| {
            let rest = &readme[i + 2..];
            &rest[..rest.find(')').unwrap_or(rest.len())]
        })
        .filter(|t| !t.starts_with('#') && !t.contains("://"))
        .filter(|t| !root.join(t.split('#').next().unwrap_or(t)).exists())
        .collect();
    assert!(missing.is_empty(), "links to no file: {missing:?}");
}

#[test]
fn the_reference_scanner_finds_what_it_should() {
    let text = "# Top\n## Deploying\nrun it (see Deploying), see [results](bench/a.md).\n\
                See Running several\nreplicas. It sees nothing; foresee none.\n```\nsee Code\n```\n";
    assert_eq!(
        see_references(text),
        [
            "Deploying",
            "[results](bench/a.md)",
            "Running several replicas"
        ]
    );
    assert_eq!(headings(text), ["Top", "Deploying"]);
    assert_eq!(anchor("TLS and egress proxies"), "tls-and-egress-proxies");
    assert_eq!(anchor("Quick start: `demo`"), "quick-start-demo");
}

#[test]
fn the_readme_rule_table_is_the_rule_catalogue() {
    let readme = read("README.md");
    let documented: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Rules"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let catalogue: Vec<&str> = modegate::policy::RuleId::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    let undocumented: Vec<&&str> = catalogue
        .iter()
        .filter(|id| !documented.iter().any(|d| d == *id))
        .collect();
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|d| !catalogue.contains(&d.as_str()))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "the table under Rules must list every rule of the catalogue (src/policy/rules.rs) once: \
         missing {undocumented:?}, not rules {unknown:?}"
    );
    assert_eq!(documented.len(), catalogue.len(), "a rule listed twice");
}
