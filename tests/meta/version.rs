//! One version, from Cargo.toml: `--version`, `modegate_build_info{version}`, the image tags in
//! deploy/, the README's image reference and its newest changelog entry all say the same.

use std::path::Path;
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect(file)
}

#[test]
fn the_binary_reports_the_package_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_modegate"))
        .arg("--version")
        .output()
        .expect("run modegate --version");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("modegate {VERSION}")
    );
    let metrics = modegate::metrics::Metrics::new().render();
    assert_eq!(
        modegate::metrics::sample(&metrics, "modegate_build_info", &[("version", VERSION)]),
        Some(1.0),
        "modegate_build_info carries the package version"
    );
}

#[test]
fn every_modegate_image_tag_in_deploy_is_the_package_version() {
    let mut tags = Vec::new();
    for layout in ["sidecar", "egress"] {
        let file = format!("deploy/kubernetes/{layout}/kustomization.yaml");
        let text = read(&file);
        let tag = text
            .lines()
            .skip_while(|l| !l.contains("newName: ghcr.io/example/modegate"))
            .find_map(|l| l.trim().strip_prefix("newTag:"))
            .unwrap_or_else(|| panic!("{file} sets no tag for the modegate image"));
        tags.push((file, tag.trim().to_string()));
    }
    for (file, tag) in &tags {
        assert_eq!(
            tag, VERSION,
            "{file}: image tag {tag}, Cargo.toml {VERSION}"
        );
    }
    let readme = read("README.md");
    let image = format!("ghcr.io/example/modegate:{VERSION}");
    assert!(readme.contains(&image), "the README names {image}");
}

#[test]
fn the_newest_changelog_entry_is_the_package_version() {
    let readme = read("README.md");
    let first = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Changelog"))
        .find_map(|l| l.strip_prefix("- "))
        .expect("a changelog entry");
    let version = first.split(':').next().unwrap_or_default();
    assert_eq!(version, VERSION, "newest changelog entry: {first}");
    let newer: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Changelog"))
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(':').next())
        .filter(|v| version_key(v) > version_key(VERSION))
        .collect();
    assert!(
        newer.is_empty(),
        "changelog entries newer than Cargo.toml: {newer:?}"
    );
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}
