//! The fault ids the sources cite ("docs/FAULTS.md F9", "C1-C4") are the
//! rows of docs/FAULTS.md, and the tests that file and tests/README.md name
//! exist: a citation of an undefined id, or a row whose test was renamed or
//! removed, fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MATRIX: &str = "docs/FAULTS.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's sources and documents: `.rs`, `.md` and `.toml` files
/// outside `target/` and `.git/`.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, found);
                }
            } else if ["rs", "md", "toml"]
                .iter()
                .any(|ext| path.extension().is_some_and(|e| e == *ext))
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root(), &mut found);
    found.sort();
    found
}

/// The parts of `text` that can cite: the comments of Rust and TOML files,
/// the whole of a Markdown file.
fn citing_text(path: &Path, text: &str) -> String {
    let marker = match path.extension().and_then(|e| e.to_str()) {
        Some("rs") => "//",
        Some("toml") => "#",
        _ => return text.to_owned(),
    };
    text.lines()
        .filter_map(|line| line.find(marker).map(|at| &line[at..]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fault id: a letter A to L and one or two digits ("F9", "C10").
fn as_id(word: &str) -> Option<(char, u32)> {
    let mut chars = word.chars();
    let letter = chars.next().filter(|c| ('A'..='L').contains(c))?;
    let digits = chars.as_str();
    let ok = (1..=2).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| (letter, digits.parse().unwrap()))
}

/// Every id `text` cites, a range such as "C1-C4" standing for each id in it.
fn cited_ids(text: &str) -> BTreeSet<String> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .flat_map(|chunk| chunk.split_inclusive('-'))
        .collect();
    let mut ids = BTreeSet::new();
    for (index, word) in words.iter().enumerate() {
        let Some((letter, first)) = as_id(word.trim_end_matches('-')) else {
            continue;
        };
        let last = match (
            word.ends_with('-'),
            words.get(index + 1).and_then(|w| as_id(w)),
        ) {
            (true, Some((same, last))) if same == letter && last >= first => last,
            _ => first,
        };
        ids.extend((first..=last).map(|n| format!("{letter}{n}")));
    }
    ids
}

/// The ids the matrix defines: the first cell of its table rows.
fn defined_ids(matrix: &str) -> BTreeSet<String> {
    matrix
        .lines()
        .filter_map(|line| line.strip_prefix("| ")?.split(" |").next())
        .filter(|cell| as_id(cell).is_some())
        .map(str::to_owned)
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_cited_fault_id_is_defined_in_the_matrix() {
    let defined = defined_ids(&read(&root().join(MATRIX)));
    assert!(defined.len() > 50, "{MATRIX} defines only {defined:?}");
    let mut undefined = Vec::new();
    for path in sources() {
        let relative = path.strip_prefix(root()).unwrap();
        if relative == Path::new(MATRIX) {
            continue;
        }
        for id in cited_ids(&citing_text(&path, &read(&path))) {
            if !defined.contains(&id) {
                undefined.push(format!("{} cites {id}", relative.display()));
            }
        }
    }
    assert!(
        undefined.is_empty(),
        "fault ids cited but not defined in {MATRIX} (add a row, or reword):\n{}",
        undefined.join("\n")
    );
}

/// Citations name the file in this repository, not the research matrix
/// it was drawn from.
#[test]
fn citations_name_docs_faults_md() {
    let mut bare = Vec::new();
    for path in sources() {
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        for (number, line) in read(&path).lines().enumerate() {
            let comment = citing_text(&path, line);
            let mut rest = comment.as_str();
            while let Some(at) = rest.find("FAULTS.md") {
                if !rest[..at].ends_with("docs/") {
                    let relative = path.strip_prefix(root()).unwrap();
                    bare.push(format!("{}:{}: {line}", relative.display(), number + 1));
                }
                rest = &rest[at + "FAULTS.md".len()..];
            }
        }
    }
    assert!(
        bare.is_empty(),
        "write docs/FAULTS.md:\n{}",
        bare.join("\n")
    );
}

/// Every `` `path::test_name` `` in the matrix and in tests/README.md names
/// a function of that file, and every other `` `path.rs` `` a file.
#[test]
fn every_test_the_documents_name_exists() {
    let mut missing = Vec::new();
    for document in [MATRIX, "tests/README.md"] {
        let text = read(&root().join(document));
        for quoted in text.split('`').skip(1).step_by(2) {
            let (file, function) = match quoted.split_once(".rs::") {
                Some((file, function)) => (format!("{file}.rs"), Some(function)),
                None if quoted.ends_with(".rs") && !quoted.contains([' ', '*']) => {
                    (quoted.to_owned(), None)
                }
                None => continue,
            };
            let path = root().join(&file);
            let found = path.is_file()
                && function.is_none_or(|name| read(&path).contains(&format!("fn {name}(")));
            if !found {
                missing.push(format!("{document}: {quoted}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not found:\n{}",
        missing.join("\n")
    );
}

/// tests/README.md maps every fault id to its tests, as the matrix does.
#[test]
fn tests_readme_has_a_row_for_every_fault_id() {
    let defined = defined_ids(&read(&root().join(MATRIX)));
    let mapped = defined_ids(&read(&root().join("tests/README.md")));
    assert_eq!(
        mapped, defined,
        "tests/README.md's fault table differs from {MATRIX}'s rows"
    );
}

#[test]
fn ranges_and_lists_are_read_as_ids() {
    let ids = |text| cited_ids(text).into_iter().collect::<Vec<_>>();
    assert_eq!(
        ids("(docs/FAULTS.md C1-C4, L8)"),
        ["C1", "C2", "C3", "C4", "L8"]
    );
    assert_eq!(ids("J1-J6, F3"), ["F3", "J1", "J2", "J3", "J4", "J5", "J6"]);
    assert_eq!(ids("H1, H2 and F10."), ["F10", "H1", "H2"]);
    assert!(ids("M1 A100 a1 AB1 FAULTS.md x86_64 I/O").is_empty());
}
