//! The runtime's architecture, checked: its top-level modules (a file or
//! folder directly under `src/`) form layers, and each imports only from
//! the layers below it; `unsafe` code sits only in `sys` and in the fault
//! handler. `python3 ../shared/tools/layers.py isolate-runtime/src 2`
//! measures the same from outside.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module imports only from modules of a lower rank;
/// modules on one line share a rank and import nothing from each other.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["wire"],
    &["vocabulary"],
    &["options"],
    &["child"],
    &["parent"],
    &["start"],
    &["pool"],
    &["async_call", "async_call_off"],
    &["jobs"],
];

/// The only files that may hold `unsafe` code, relative to `src/`.
const UNSAFE_HOMES: &[&str] = &["sys/", "child/fault.rs"];

fn rank(unit: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&unit))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path, files: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).expect("read the source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src()).expect("under src/");
            let text = fs::read_to_string(&path).expect("read a source file");
            files.push((relative.to_string_lossy().into_owned(), text));
        }
    }
}

/// The top-level module a file belongs to: `child/fault.rs` -> `child`.
fn unit_of(relative: &str) -> &str {
    let first = relative.split('/').next().unwrap_or(relative);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The code of a file, without comments and without its unit tests (a
/// `#[cfg(test)]` module does not shape the architecture).
fn code_of(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |at| &after[at..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |at| &after[at + 2..]);
        } else if rest.starts_with('"') {
            // A string literal: kept out, so `"crate::x"` in a message
            // is not an import.
            let mut chars = rest.char_indices().skip(1);
            let mut end = rest.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = at + 1;
                        break;
                    }
                    _ => {}
                }
            }
            code.push_str("\"\"");
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    match code.find("#[cfg(test)]\nmod tests") {
        Some(at) => code[..at].to_owned(),
        None => code,
    }
}

/// The first segments of every `crate::` path in `code`: `crate::a::b`
/// gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            continue; // `$crate::` or `some_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        names.insert(ident_at(&group[i..]).to_owned());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest).to_owned());
        }
    }
    names
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The root's re-exports (`pub use options::isolate::{Isolate, ..}` in
/// `lib.rs`), as item name -> the unit it comes from: a module reaching
/// `crate::Isolate` imports from `options`.
fn reexports(lib: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    for line in code_of(lib).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let unit = ident_at(path).to_owned();
        let names = match path.find('{') {
            Some(at) => path[at + 1..].trim_end_matches('}').to_owned(),
            None => path.rsplit("::").next().unwrap_or(path).to_owned(),
        };
        for name in names.split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap_or(name);
            if !name.is_empty() && name != "self" && name != "*" {
                items.push((name.to_owned(), unit.clone()));
            }
        }
    }
    items
}

/// Every import of `file` (in `unit`) that does not point down, as
/// "file -> unit".
fn upward_imports(file: &str, code: &str, reexported: &[(String, String)]) -> Vec<String> {
    let unit = unit_of(file);
    let Some(own) = rank(unit) else {
        return vec![format!("{file}: `{unit}` is in no layer of LAYERS")];
    };
    crate_paths(code)
        .into_iter()
        .filter_map(|name| {
            let target = reexported
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.as_str(), |(_, unit)| unit.as_str());
            let target_rank = rank(target)?;
            (target != unit && target_rank >= own).then(|| format!("{file} -> {target} ({name})"))
        })
        .collect()
}

/// Whether `code` holds an `unsafe` block, function, impl or extern block.
fn has_unsafe(code: &str) -> bool {
    code.match_indices("unsafe").any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + "unsafe".len()..].trim_start();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && ["{", "fn ", "impl", "extern", "trait"]
                .iter()
                .any(|next| after.starts_with(next))
    })
}

#[test]
fn every_import_points_down_a_layer() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let reexported = reexports(&lib);
    assert!(
        reexported
            .iter()
            .any(|(item, unit)| item == "Isolate" && unit == "options"),
        "the root's re-exports were not read: {reexported:?}"
    );
    let upward: Vec<String> = files
        .iter()
        .filter(|(file, _)| file != "lib.rs")
        .flat_map(|(file, text)| upward_imports(file, &code_of(text), &reexported))
        .collect();
    assert!(
        upward.is_empty(),
        "imports that do not point down a layer (see LAYERS):\n{}",
        upward.join("\n")
    );
}

#[test]
fn unsafe_code_lives_only_in_sys_and_the_fault_handler() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let misplaced: Vec<&str> = files
        .iter()
        .filter(|(file, text)| {
            !UNSAFE_HOMES.iter().any(|home| file.starts_with(home)) && has_unsafe(&code_of(text))
        })
        .map(|(file, _)| file.as_str())
        .collect();
    assert!(
        misplaced.is_empty(),
        "`unsafe` outside {UNSAFE_HOMES:?}: {misplaced:?}"
    );
    let homes = files
        .iter()
        .filter(|(_, text)| has_unsafe(&code_of(text)))
        .count();
    assert!(homes > 0, "no `unsafe` found at all: the scan is broken");
}

/// The checks themselves catch what they are for.
#[test]
fn the_checks_catch_an_upward_import_and_stray_unsafe() {
    let reexported = vec![("Isolate".to_owned(), "options".to_owned())];
    let upward = |file, code| upward_imports(file, &code_of(code), &reexported);
    assert_eq!(
        upward("wire/codec.rs", "use crate::parent::backend::Reply;"),
        ["wire/codec.rs -> parent (parent)"]
    );
    assert_eq!(
        upward("vocabulary/report.rs", "use crate::{sys, child::panic};"),
        ["vocabulary/report.rs -> child (child)"]
    );
    assert_eq!(
        upward("vocabulary/error.rs", "fn f(_: &crate::Isolate) {}"),
        ["vocabulary/error.rs -> options (Isolate)"]
    );
    assert_eq!(
        upward("parent/mod.rs", "use crate::options::isolate::Isolate;"),
        Vec::<String>::new()
    );
    assert!(
        upward(
            "parent/x.rs",
            "// use crate::start::fork;\nlet s = \"crate::start\";"
        )
        .is_empty()
    );
    assert_eq!(
        upward("fresh.rs", ""),
        ["fresh.rs: `fresh` is in no layer of LAYERS"]
    );
    assert!(has_unsafe("fn f() { unsafe { g() } }"));
    assert!(has_unsafe("pub(crate) unsafe fn g() {}"));
    assert!(!has_unsafe(&code_of(
        "// unsafe { }\n#[ctor::ctor(unsafe)]\nfn deny_unsafe_code() {}"
    )));
}
