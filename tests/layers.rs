//! `src/server/` imports downward only (docs/architecture.md, "Modules of src/server/"): each
//! module may use only modules of a lower layer than its own, so there is no import circle and a
//! reader can follow the imports from the top without meeting a file twice. A new module must be
//! given its layer here.

use std::collections::BTreeSet;

/// Layers from the top; a module may import only from layers after its own.
const LAYERS: &[&[&str]] = &[
    &["mod"],
    &["executor"],
    &["recovery", "conn", "metrics"],
    &["batch", "node"],
    &["report"],
    &["core"],
    &["session", "mesh", "wal", "park", "admission", "audit"],
    &["auth", "durable"],
    &["config", "owner", "memory"],
    &["datadir"],
    &["duplex"],
    &["transport"],
    &["runtime"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("src/server/{module}.rs has no layer in tests/layers.rs"))
}

/// The sibling modules `source` names through `prefixes` (`super::`, `crate::server::`, …).
fn imports(source: &str, siblings: &BTreeSet<String>, prefixes: &[&str]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in prefixes {
        let mut rest = source;
        while let Some(i) = rest.find(prefix) {
            // `super::super::x` is not `super::x`.
            let whole = i < 7 || !rest[..i].ends_with("super::");
            rest = &rest[i + prefix.len()..];
            if !whole && *prefix == "super::" {
                continue;
            }
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(|n| n.trim().split("::").next().unwrap_or("")).collect()
            } else {
                vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")]
            };
            found.extend(names.into_iter().filter(|n| siblings.contains(*n)).map(str::to_owned));
        }
    }
    found
}

/// A file's text and the prefixes through which it names a sibling module.
type Source = (String, Vec<&'static str>);

/// Each module of `src/server/` (a file `x.rs`, or a directory `x/` of files) with its files'
/// sources and, per file, the prefixes through which it names a sibling module.
fn modules() -> Vec<(String, Vec<Source>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut files = Vec::new();
            for f in std::fs::read_dir(&p).unwrap() {
                let f = f.unwrap().path();
                let prefixes = if f.file_stem().is_some_and(|s| s == "mod") {
                    vec!["super::", "crate::server::"]
                } else {
                    vec!["super::super::", "crate::server::"]
                };
                files.push((std::fs::read_to_string(&f).unwrap(), prefixes));
            }
            out.push((name, files));
        } else if p.extension().is_some_and(|x| x == "rs") {
            let prefixes = if name == "mod" {
                vec!["self::", "crate::server::"]
            } else {
                vec!["super::", "crate::server::"]
            };
            out.push((name, vec![(std::fs::read_to_string(&p).unwrap(), prefixes)]));
        }
    }
    out
}

#[test]
fn server_modules_import_downward_only() {
    let modules = modules();
    let siblings: BTreeSet<String> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut wrong = Vec::new();
    for (module, files) in &modules {
        for (source, prefixes) in files {
            for used in imports(source, &siblings, prefixes) {
                if used != *module && layer_of(&used) <= layer_of(module) {
                    wrong.push(format!("{module} uses {used}"));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports that do not go down a layer: {wrong:?}");
}
