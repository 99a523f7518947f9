//! Every library crate of the workspace is built in floors: a module may use
//! only the modules declared before it in its parent (`lib.rs` or a folder's
//! `mod.rs`), so a reader can learn a crate bottom-up and no two modules
//! need each other. This test reads the sources and names each reference
//! that points up or sideways to a later floor.
//!
//! What counts as a reference: `crate::a::...` and `super::b` paths in code
//! outside `#[cfg(test)]` modules and comments. A folder module's own file
//! (`mod.rs`) stands above its children and may use any of them; a child
//! may use earlier siblings, never the items of its parent file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The library crates, by their `src` folder relative to the workspace.
const CRATES: &[&str] = &["shared/src", "broker/src", "agent/src", "agent/client/src"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The code of a file without comments, string literals and test modules.
fn code_of(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item it guards when it is a module: to the end of the
            // file for the usual trailing `mod tests`, else to its brace.
            if lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod "))
            {
                break;
            }
            continue;
        }
        let without_comment = match trimmed.find("//") {
            Some(i) => &trimmed[..i],
            None => trimmed,
        };
        out.push_str(&strip_strings(without_comment));
        out.push('\n');
    }
    out
}

fn strip_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// `mod a;` and `pub mod a;` declarations of a parent file, in order.
fn declared_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            let name = rest.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// The first path segment after each `prefix` in `code`.
fn references(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
        // `crate::{a, b}` / `super::{a, b}`: every name in the braces.
        if rest.starts_with('{') {
            if let Some(end) = rest.find('}') {
                for part in rest[1..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push(name);
                    }
                }
            }
        }
    }
    found
}

/// A module's files: `dir/name.rs`, or `dir/name/mod.rs` and everything
/// under `dir/name/` (its own children are checked one level down).
fn module_file(dir: &Path, name: &str) -> Option<(PathBuf, Option<PathBuf>)> {
    let file = dir.join(format!("{name}.rs"));
    let folder = dir.join(name);
    if folder.join("mod.rs").is_file() {
        return Some((folder.join("mod.rs"), Some(folder)));
    }
    if file.is_file() {
        return Some((file, folder.is_dir().then_some(folder)));
    }
    None
}

/// All `.rs` files under `dir`.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Checks the floors declared by `parent` (a crate root or a `mod.rs`),
/// whose children live in `dir`; `path` is the parent's module path
/// (`crate` or `crate::a`). Violations are pushed as readable lines.
fn check_floors(parent: &Path, dir: &Path, path: &str, problems: &mut Vec<String>) {
    let Ok(source) = fs::read_to_string(parent) else {
        return;
    };
    let floors = declared_modules(&code_of(&source));
    let floor_of: BTreeMap<&str, usize> = floors
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    for (floor, name) in floors.iter().enumerate() {
        let Some((file, folder)) = module_file(dir, name) else {
            continue;
        };
        let mut files = vec![file.clone()];
        if let Some(folder) = &folder {
            files_under(folder, &mut files);
            files.dedup();
        }
        for f in &files {
            let Ok(text) = fs::read_to_string(f) else {
                continue;
            };
            let code = code_of(&text);
            // `crate::<parent path>::<sibling>` from anywhere inside the module.
            let own = if path == "crate" {
                "crate::".to_owned()
            } else {
                format!("{path}::")
            };
            let mut used: Vec<String> = references(&code, &own);
            // `super::<sibling>` only from the module's own top file.
            if *f == file {
                used.extend(references(&code, "super::"));
            }
            for other in used {
                if other == *name {
                    continue;
                }
                match floor_of.get(other.as_str()) {
                    Some(&other_floor) if other_floor > floor => problems.push(format!(
                        "{}: `{name}` uses `{other}`, which is declared after it in {}",
                        f.display(),
                        parent.display()
                    )),
                    Some(_) => {}
                    // Not a sibling module: an item of the parent file. A
                    // crate root's items are fine (re-exports); a folder's
                    // own file stands above its children.
                    None if path != "crate" && *f == file => problems.push(format!(
                        "{}: `{name}` uses `{other}` of its parent {}, which stands above it",
                        f.display(),
                        parent.display()
                    )),
                    None => {}
                }
            }
        }
        // One level down.
        if let Some(folder) = folder {
            check_floors(&file, &folder, &format!("{path}::{name}"), problems);
        }
    }
}

#[test]
fn every_module_uses_only_the_modules_declared_before_it() {
    let root = workspace();
    let mut problems = Vec::new();
    let mut checked = 0;
    for krate in CRATES {
        let src = root.join(krate);
        let lib = src.join("lib.rs");
        if !lib.is_file() {
            continue;
        }
        checked += 1;
        check_floors(&lib, &src, "crate", &mut problems);
    }
    assert!(checked >= 3, "found only {checked} library crates to check");
    assert!(
        problems.is_empty(),
        "modules that use a later floor (move the item down, or reorder the declarations):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_a_module_that_uses_a_later_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("lib.rs"), "pub mod low;\n\npub mod high;\n").expect("lib");
    fs::write(dir.path().join("low.rs"), "use crate::high::Thing;\n").expect("low");
    fs::write(dir.path().join("high.rs"), "use crate::low::Other;\n").expect("high");
    let mut problems = Vec::new();
    check_floors(
        &dir.path().join("lib.rs"),
        dir.path(),
        "crate",
        &mut problems,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`low` uses `high`"), "{problems:?}");

    // A child of a folder module that reaches into its parent's own items.
    let sub = dir.path().join("high");
    fs::create_dir(&sub).expect("dir");
    fs::remove_file(dir.path().join("high.rs")).expect("rm");
    fs::write(sub.join("mod.rs"), "pub mod a;\npub struct Top;\n").expect("mod");
    fs::write(sub.join("a.rs"), "use super::Top;\n").expect("a");
    fs::write(dir.path().join("low.rs"), "\n").expect("low");
    let mut problems = Vec::new();
    check_floors(
        &dir.path().join("lib.rs"),
        dir.path(),
        "crate",
        &mut problems,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("uses `Top` of its parent"),
        "{problems:?}"
    );
}
