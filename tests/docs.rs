//! The README against what it documents: every performance figure it quotes comes from the
//! committed benchmark results, and the commands table names every command and flag the binary
//! takes.

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
    // callback throughput.
    let results = [
        "bench/results.md",
        "bench/stalled.md",
        "bench/soak.md",
        "bench/callbacks.md",
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
