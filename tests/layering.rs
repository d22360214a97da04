//! The shape of the code, checked: the core depends on no HTTP or database
//! crate, no two modules import each other (directly or through others),
//! and storage has no `unsafe`.
//!
//! Module imports are read from the sources: `use` trees and every
//! `crate::`/`super::`/`self::` path, each resolved to the deepest module
//! it names. Test modules (`#[cfg(test)] mod ...`) are left out: they
//! belong to the module they test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// What the core must never depend on, directly or not.
const FORBIDDEN_IN_CORE: &[&str] = &["axum", "hyper", "tower", "tower-http", "sqlx", "rusqlite"];

#[test]
fn the_core_depends_on_no_http_or_database_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "switchyard-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(ROOT)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("switchyard-core"), "{tree}");
    for name in FORBIDDEN_IN_CORE {
        assert!(
            !crates.contains(name),
            "switchyard-core depends on {name}:\n{tree}"
        );
    }
}

#[test]
fn no_two_modules_import_each_other() {
    for root in ["src", "crates/core/src"] {
        let graph = module_graph(&Path::new(ROOT).join(root));
        assert!(graph.len() > 10, "read the modules of {root}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "modules of {root} import each other: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn storage_has_no_unsafe() {
    for file in rust_files(&Path::new(ROOT).join("src/storage")) {
        let text = strip(&std::fs::read_to_string(&file).unwrap());
        assert!(
            !words(&text).any(|w| w == "unsafe"),
            "{} uses unsafe",
            file.display()
        );
    }
}

/// The checker itself finds what it should.
#[test]
fn the_checker_sees_imports_and_cycles() {
    let modules: BTreeSet<String> = ["crate", "crate::a", "crate::a::b", "crate::c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "use super::b::{X, Y as Z};\nfn f() { crate::c::g(); }\n#[cfg(test)]\nmod tests { use crate::a; }";
    let edges = imports("crate::a", text, &modules);
    // `super` of `a` is the root, which has no module `b`: an item of the
    // root; the test module's import is left out.
    assert_eq!(
        edges,
        ["crate", "crate::c"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    let edges = imports("crate::a", "use self::b::X;\nuse b::Y;", &modules);
    assert!(edges.contains("crate::a::b"));
    let mut graph = BTreeMap::new();
    graph.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
    graph.insert("y".to_string(), BTreeSet::from(["x".to_string()]));
    assert!(find_cycle(&graph).is_some());
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `src/a/b.rs` → `crate::a::b`; `mod.rs` and `lib.rs` name their directory.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") => return None, // a binary: its own crate
        Some("mod") | Some("lib") => {
            parts.pop();
        }
        _ => {}
    }
    Some(
        std::iter::once("crate".to_string())
            .chain(parts)
            .collect::<Vec<_>>()
            .join("::"),
    )
}

fn module_graph(root: &Path) -> Graph {
    let files: Vec<(String, String)> = rust_files(root)
        .into_iter()
        .filter_map(|f| {
            let module = module_of(root, &f)?;
            Some((module, std::fs::read_to_string(&f).unwrap()))
        })
        .collect();
    // Modules declared as test-only (`#[cfg(test)] mod x;`) are left out.
    let mut test_only = BTreeSet::new();
    for (module, text) in &files {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]"
                && let Some(name) = pair[1]
                    .strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
            {
                test_only.insert(format!("{module}::{name}"));
            }
        }
    }
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(m, _)| m.clone())
        .filter(|m| !test_only.contains(m))
        .collect();
    files
        .iter()
        .filter(|(m, _)| modules.contains(m))
        .map(|(m, text)| (m.clone(), imports(m, text, &modules)))
        .collect()
}

/// The modules `module` (whose source is `text`) imports.
fn imports(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = without_test_modules(&strip(text));
    let mut paths: Vec<Vec<String>> = Vec::new();
    // `use` trees, expanded.
    let mut rest = text.as_str();
    while let Some(i) = find_word(rest, "use") {
        let after = &rest[i + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand(after[..end].trim(), &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    // Qualified paths anywhere.
    let tokens: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        // `a::` before a `{` is the head of a use tree, expanded above.
        .filter(|t| t.contains("::") && !t.ends_with("::"))
        .collect();
    for token in tokens {
        let segments: Vec<String> = token
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // `crate::`, `super::`, `self::` paths, and paths from a child
        // module (uniform paths); anything else names another crate.
        paths.push(segments);
    }
    let mut edges = BTreeSet::new();
    for path in paths {
        if let Some(target) = resolve(module, &path, modules)
            && target != module
        {
            edges.insert(target);
        }
    }
    edges
}

/// The deepest module a path from `module` names, if it names one of ours.
fn resolve(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<&str> = module.split("::").collect();
    let mut segments = path.iter().map(String::as_str).peekable();
    match segments.peek().copied() {
        Some("crate") => {
            base = vec!["crate"];
            segments.next();
        }
        Some("self") => {
            segments.next();
        }
        Some("super") => {
            while segments.peek() == Some(&"super") {
                segments.next();
                base.pop();
            }
        }
        // A child module named without `self::` (uniform paths).
        Some(first) if modules.contains(&format!("{module}::{first}")) => {}
        _ => return None,
    }
    let mut current = base.join("::");
    for segment in segments {
        let next = format!("{current}::{segment}");
        if modules.contains(&next) {
            current = next;
        } else {
            break;
        }
    }
    modules.contains(&current).then_some(current)
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth = prefix.len();
        prefix.extend(head);
        for part in split_top_level(inner) {
            expand(part, prefix, out);
        }
        prefix.truncate(depth);
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.clone();
        full.extend(
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "*")
                .map(str::to_string),
        );
        if !full.is_empty() {
            out.push(full);
        }
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = at.checked_sub(1).map(|b| bytes[b]);
        let after = bytes.get(at + word.len()).copied();
        let boundary = |c: Option<u8>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_'));
        if boundary(before) && boundary(after) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
}

/// The source without comments and string or char literals.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            'r' if chars.peek() == Some(&'#') || chars.peek() == Some(&'"') => {
                // A raw string r"..." or r#"..."#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    continue;
                }
                chars.next();
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&closing) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n') or a lifetime ('a): skip only literals.
                let mut ahead = chars.clone();
                let first = ahead.next();
                let literal = match first {
                    Some('\\') => true,
                    Some(_) => ahead.next() == Some('\''),
                    None => false,
                };
                if literal {
                    if first == Some('\\') {
                        chars.next();
                        chars.next();
                    } else {
                        chars.next();
                    }
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The source without `#[cfg(test)] mod name { ... }` blocks.
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = &rest[i + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if trimmed.starts_with("mod ")
            && let Some(open) = trimmed.find('{')
            && trimmed[..open].split_whitespace().count() == 2
        {
            out.push_str(&rest[..i]);
            let body = &trimmed[open..];
            let mut depth = 0;
            let mut end = body.len();
            for (j, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &body[end..];
        } else {
            out.push_str(&rest[..i + "#[cfg(test)]".len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A cycle in the graph, as the modules along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}
