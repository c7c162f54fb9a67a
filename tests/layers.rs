//! The crate's layers (docs/architecture.md): every module of src/ imports only from its own
//! layer or the ones below, and no two modules import each other, directly or around a circle.
//! Read from the sources: every `crate::a::b` path (and `realm::` in the binary, `super::`
//! resolved), `use crate::{a, b::c}` groups included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module is placed by the longest prefix of its path listed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &["error", "rng", "io", "lines", "alloc", "progress"],
    ),
    ("device", &["device"]),
    // What the ops' own checks and benchmarks (their check.rs) are written with.
    ("measure", &["measure", "check"]),
    ("kernels", &["kernels"]),
    ("ops", &["ops"]),
    // The collectives between the processes of a run: below whatever trains or searches.
    ("dist", &["dist"]),
    ("model", &["model"]),
    ("data", &["data"]),
    ("index", &["index"]),
    ("train", &["train", "report"]),
    ("use", &["eval", "ask", "embed", "import"]),
    ("verify", &["selftest", "conformance", "bench"]),
    ("app", &["demo", "demo_dir", "experiment"]),
    ("cli", &["cli", "main"]),
];

/// A source file's module path: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `src/main.rs` is
/// `main`, `src/lib.rs` the root (empty).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line and block) and string literals, so that paths in prose or
/// messages are not read as imports.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The paths `root::...` in `code`, each with its groups expanded (`root::{a, b::c}` gives `a`
/// and `b::c`); segments are identifiers.
fn paths_after(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let needle = format!("{root}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(&code[from..], Vec::new(), &mut found);
    }
    found
}

/// Reads a path (or a `{...}` group of paths) at the start of `s`, prefixed by `prefix`.
fn expand(s: &str, prefix: Vec<String>, found: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[item_start..i], prefix.clone(), found);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[item_start..i], prefix.clone(), found);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        if !prefix.is_empty() {
            found.push(prefix);
        }
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    let rest = s[ident.len()..].trim_start();
    match rest.strip_prefix("::") {
        Some(rest) => expand(rest, path, found),
        None => found.push(path),
    }
}

/// The modules of the crate (every file's module and its ancestors).
fn modules(src: &Path, files: &[PathBuf]) -> BTreeSet<Vec<String>> {
    let mut all = BTreeSet::new();
    for f in files {
        let m = module_of(src, f);
        for n in 1..=m.len() {
            all.insert(m[..n].to_vec());
        }
    }
    all
}

/// The longest prefix of `path` that is a module.
fn module_prefix(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

fn layer_of(module: &[String]) -> (usize, &'static str) {
    let name = module.join("::");
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (layer, members)) in LAYERS.iter().enumerate() {
        for m in *members {
            let hit = name == *m || name.starts_with(&format!("{m}::"));
            if hit && best.is_none_or(|(len, _, _)| m.len() > len) {
                best = Some((m.len(), rank, layer));
            }
        }
    }
    let (_, rank, layer) =
        best.unwrap_or_else(|| panic!("module `{name}` is in no layer: add it to LAYERS"));
    (rank, layer)
}

/// Every import edge between modules: (importer, imported), by file.
fn edges() -> BTreeSet<(Vec<String>, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules = modules(&src, &files);
    let mut edges = BTreeSet::new();
    for file in &files {
        let me = module_of(&src, file);
        let in_binary = me.first().is_some_and(|m| m == "main" || m == "cli");
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let mut paths = paths_after(&code, "crate");
        if in_binary {
            // The binary reaches the library as `realm::`; its own `crate::` is main.rs.
            paths.extend(paths_after(&code, "realm"));
        }
        // `super::x` in module a::b is a::x (a test module inside a::b reads as a::b's own).
        let parent = me[..me.len().saturating_sub(1)].to_vec();
        for p in paths_after(&code, "super") {
            let mut full = parent.clone();
            full.extend(p);
            paths.push(full);
        }
        for path in paths {
            if let Some(target) = module_prefix(&path, &modules) {
                edges.insert((me.clone(), target));
            }
        }
    }
    edges
}

/// `a` and `b` lifted to the children of their deepest common ancestor; None when one contains
/// the other (a module and its own parts may use each other).
fn siblings(a: &[String], b: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if common == a.len() || common == b.len() {
        return None;
    }
    Some((a[..=common].to_vec(), b[..=common].to_vec()))
}

#[test]
fn every_import_goes_down_the_layers() {
    let mut upward = Vec::new();
    for (from, to) in edges() {
        let (from_rank, from_layer) = layer_of(&from);
        let (to_rank, to_layer) = layer_of(&to);
        if to_rank > from_rank {
            upward.push(format!(
                "`{}` ({from_layer}) imports `{}` ({to_layer}), a layer above it",
                from.join("::"),
                to.join("::")
            ));
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_modules_import_each_other() {
    // Between sibling modules (children of one parent), every import of a part counting as
    // the sibling's.
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, to) in edges() {
        if let Some((a, b)) = siblings(&from, &to) {
            graph.entry(a).or_default().insert(b);
        }
    }
    let mut cycles = Vec::new();
    for (a, targets) in &graph {
        for b in targets {
            if let Some(back) = path_between(&graph, b, a) {
                let mut circle = vec![a.join("::")];
                circle.extend(back.iter().map(|m| m.join("::")));
                cycles.push(format!(
                    "`{}` and `{}` import each other: {}",
                    a.join("::"),
                    b.join("::"),
                    circle.join(" -> ")
                ));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// A path of imports from `from` to `to` (both included), if there is one.
fn path_between(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    from: &Vec<String>,
    to: &Vec<String>,
) -> Option<Vec<Vec<String>>> {
    let mut came_from: BTreeMap<&Vec<String>, &Vec<String>> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut path = vec![m.clone()];
            let mut at = m;
            while let Some(prev) = came_from.get(at) {
                path.push((*prev).clone());
                at = prev;
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(m).into_iter().flatten() {
            if seen.insert(next) {
                came_from.insert(next, m);
                queue.push_back(next);
            }
        }
    }
    None
}

#[test]
fn the_reader_finds_grouped_and_nested_paths() {
    let code = code_only(
        "use crate::{a::{b, c::D}, e};\n// crate::f\nlet s = \"crate::g\"; x(crate::h::i);",
    );
    let got: Vec<String> = paths_after(&code, "crate")
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(got, ["a::b", "a::c::D", "e", "h::i"]);
}
