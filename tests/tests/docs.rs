//! Documentation that must stay true to the code.

use std::path::Path;
use std::path::PathBuf;

/// Name endings that mark a constant as a limit, bound, timeout or period.
const LIMIT_ENDINGS: &[&str] = &[
    "_MAX",
    "_MIN",
    "_MS",
    "TIMEOUT",
    "_BYTES",
    "PERIOD",
    "_WAIT",
    "_DELAY",
    "_MEMORY",
    "_LIMIT",
    "_DEPTH",
    "_PER_PASS",
    "_PER_BATCH",
    "_CHUNKS",
    "_SLOTS",
    "_STRIPES",
    "_S",
    "_RPS",
    "BACKOFF_RESET",
    "_YIELDS",
    "_RECORDS",
    "INTERVAL",
    "KEEPALIVE",
    "_FACTOR",
    "_SIZE",
    "_FLOOR",
    "_PERMILLE",
    "_UTILISATION",
    "_QUANTILE",
    "_STEP",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names of the constants declared in `file` outside its tests.
fn constants(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let decl = line.trim_start();
        let decl = decl.strip_prefix("pub(crate) ").or_else(|| decl.strip_prefix("pub ")).unwrap_or(decl);
        let Some(rest) = decl.strip_prefix("const ") else { continue };
        let Some((name, _)) = rest.split_once(':') else { continue };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn every_limit_is_listed() {
    let root = workspace();
    let listed = std::fs::read_to_string(root.join("docs/LIMITS.md")).expect("docs/LIMITS.md");
    let mut missing = Vec::new();
    // Every constant of the two limit files, and every limit-named
    // constant of the node.
    for file in ["base/src/limits.rs", "placement/src/bounds.rs"] {
        for name in constants(&root.join(file)) {
            if !listed.contains(&format!("`{name}`")) {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    let mut node_files = Vec::new();
    rust_files(&root.join("node/src"), &mut node_files);
    node_files.sort();
    for file in node_files {
        for name in constants(&file) {
            if LIMIT_ENDINGS.iter().any(|e| name.ends_with(e)) && !listed.contains(&format!("`{name}`")) {
                missing.push(format!("{}: {name}", file.strip_prefix(&root).unwrap_or(&file).display()));
            }
        }
    }
    assert!(missing.is_empty(), "limits missing from docs/LIMITS.md:\n{}", missing.join("\n"));
}
