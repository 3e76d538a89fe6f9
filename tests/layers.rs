//! `src/server/` imports downward only (docs/architecture.md, "Modules of src/server/"): each
//! module may use only modules of a lower layer than its own, so there is no import circle and a
//! reader can follow the imports from the top without meeting a file twice. A new module must be
//! given its layer here.

use std::collections::BTreeSet;

/// Layers from the top; a module may import only from layers after its own.
const LAYERS: &[&[&str]] = &[
    &["mod"],
    &["executor"],
    &["recovery", "conn"],
    &["batch"],
    &["report"],
    &["core"],
    &["session", "mesh", "wal", "park", "admission", "audit"],
    &["auth", "stats", "durable"],
    &["config", "owner"],
    &["datadir"],
    &["transport"],
    &["runtime"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("src/server/{module}.rs has no layer in tests/layers.rs"))
}

/// The sibling modules `source` names through `super::` (or `self::`, in mod.rs).
fn imports(source: &str, siblings: &BTreeSet<String>, is_mod: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in if is_mod { ["self::", "super::"] } else { ["super::", "super::"] } {
        let mut rest = source;
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
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

#[test]
fn server_modules_import_downward_only() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let siblings: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut wrong = Vec::new();
    for (module, source) in &files {
        let is_mod = module == "mod";
        for used in imports(source, &siblings, is_mod) {
            if used != *module && layer_of(&used) <= layer_of(module) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that do not go down a layer: {wrong:?}");
}
