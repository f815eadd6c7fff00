//! The layout rules of `src/` (shared/STYLE.md, issue 11), checked on the
//! source itself so they cannot quietly erode:
//!
//! - the top-level modules form no import cycle: a module's `crate::X`
//!   references are its edges, and the graph must be acyclic;
//! - no file is over 1,000 lines, not counting its `#[cfg(test)]` module;
//! - no file outside `src/events/` logs or counts by itself (`tracing` and
//!   `metrics` calls): every observable event is a struct in `events/`;
//! - no type takes the name of a prelude item (`Send` shadowing
//!   `std::marker::Send`), and no file is a grab bag (`util.rs`).
//!
//! Run `cargo test --test architecture -- --nocapture` to print the module
//! graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1000;

/// Cycles still being broken up (issue 11), each as its sorted member
/// list. A ratchet: a cycle not listed here fails the test, and so does a
/// listed one that is gone, so the list only shrinks. Empty when done.
const KNOWN_CYCLES: &[&[&str]] = &[];

/// Files still over [`MAX_LINES`], with the same ratchet.
const KNOWN_LONG_FILES: &[&str] = &[];

/// Files outside `src/events/` that still call `tracing` or `metrics`
/// themselves (issue 11, item 7, second half), with the same ratchet.
const KNOWN_SCATTERED_EVENTS: &[&str] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate roots).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The text of a file without comments (so a doc comment naming
/// `crate::x` is not an edge). String literals are rare enough here to
/// leave in.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules named by `crate::NAME` in `code`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue; // `$crate::` in macros, or part of a longer path
        }
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Line count of a file not counting its `#[cfg(test)] mod … { … }` blocks.
fn lines_without_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut count = 0;
    let mut i = 0;
    while i < lines.len() {
        let is_test_mod = lines[i].trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("mod ") && l.trim_end().ends_with('{'));
        if is_test_mod {
            // Skip to the brace that closes the module.
            let mut depth = 0i64;
            i += 1;
            while i < lines.len() {
                depth += lines[i].matches('{').count() as i64;
                depth -= lines[i].matches('}').count() as i64;
                i += 1;
                if depth <= 0 {
                    break;
                }
            }
            continue;
        }
        count += 1;
        i += 1;
    }
    count
}

/// Files that are whole `#[cfg(test)] mod NAME;` modules of their parent.
fn test_module_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = fs::read_to_string(f).expect("read source");
        let dir = match f.file_stem().and_then(|s| s.to_str()) {
            Some("mod" | "lib" | "main") => f.parent().map(Path::to_path_buf),
            Some(stem) => f.parent().map(|p| p.join(stem)),
            None => None,
        };
        let Some(dir) = dir else { continue };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            let name = w[1].strip_prefix("mod ").and_then(|r| r.strip_suffix(';'));
            if let (true, Some(name)) = (w[0] == "#[cfg(test)]", name) {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// What only `src/events/` may write: paths into the `tracing` and
/// `metrics` crates, and their macros called bare after a `use`.
const EVENT_PATHS: &[&str] = &["tracing::", "metrics::"];
const EVENT_MACROS: &[&str] = &[
    "trace!(",
    "debug!(",
    "info!(",
    "warn!(",
    "error!(",
    "event!(",
    "counter!(",
    "gauge!(",
    "histogram!(",
    "describe_counter!(",
    "describe_gauge!(",
    "describe_histogram!(",
];

/// Whether the word at `i` of `code` begins a path, rather than continuing
/// one (`events::metrics::x`) or ending a longer name (`my_info!(`).
/// `::tracing::x` begins one.
fn starts_path(code: &str, i: usize) -> bool {
    let before = &code[..i];
    let is_name = |c: char| is_ident(c) || c == '$';
    match before.strip_suffix("::") {
        Some(b) => !b
            .chars()
            .next_back()
            .is_some_and(|c| is_name(c) || c == '>'),
        None => !before.chars().next_back().is_some_and(is_name),
    }
}

/// Whether a `use` item names `krate` as its root: `use tracing;`,
/// `use ::metrics as m;`, `use {tracing, …};` (not `use a::{metrics}`).
fn imports_crate(code: &str, krate: &str) -> bool {
    code.match_indices("use ")
        .filter(|(i, _)| starts_path(code, *i))
        .any(|(i, _)| {
            let item = code[i + "use ".len()..].split(';').next().unwrap_or("");
            item.match_indices(krate).any(|(j, _)| {
                let head = item[..j].trim_start_matches([' ', '\n', '{']);
                let head = head.strip_prefix("::").unwrap_or(head);
                let after = item[j + krate.len()..].chars().next();
                let root =
                    head.is_empty() || (!head.contains("::") && head.trim_end().ends_with(','));
                root && !after.is_some_and(is_ident)
            })
        })
}

/// The `tracing`/`metrics` uses in `code` (comments already stripped), as
/// the matched words.
fn event_calls(code: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for pat in EVENT_PATHS.iter().chain(EVENT_MACROS) {
        let hit = code.match_indices(pat).any(|(i, _)| starts_path(code, i));
        if hit {
            out.push(*pat);
        }
    }
    for krate in ["tracing", "metrics"] {
        if imports_crate(code, krate) {
            out.push(krate);
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    let mut tops = BTreeSet::new();
    for f in &files {
        if let Some(m) = top_module(f) {
            tops.insert(m);
        }
    }
    for f in &files {
        let Some(m) = top_module(f) else { continue };
        let text = fs::read_to_string(f).expect("read source");
        let deps = graph.entry(m.clone()).or_default();
        for r in crate_refs(&code_only(&text)) {
            if r != m && tops.contains(&r) {
                deps.insert(r);
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = module_graph();
    for (m, deps) in &graph {
        let deps: Vec<_> = deps.iter().map(String::as_str).collect();
        println!("{m} -> {}", deps.join(" "));
    }
    let found: BTreeSet<Vec<String>> = cycles(&graph).into_iter().collect();
    let known: BTreeSet<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "modules that import each other in a cycle: {new:?}"
    );
    assert!(
        gone.is_empty(),
        "cycles broken: take them out of KNOWN_CYCLES: {gone:?}"
    );
}

#[test]
fn no_source_file_is_over_a_thousand_lines_outside_its_tests() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let test_modules = test_module_files(&files);
    let over: BTreeSet<_> = files
        .iter()
        .filter(|f| !test_modules.contains(*f))
        .map(|f| {
            let n = lines_without_tests(&fs::read_to_string(f).expect("read source"));
            (f.strip_prefix(src()).unwrap_or(f).display().to_string(), n)
        })
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    let known: BTreeSet<&str> = KNOWN_LONG_FILES.iter().copied().collect();
    let new: Vec<_> = over
        .iter()
        .filter(|(f, _)| !known.contains(f.as_str()))
        .collect();
    let gone: Vec<_> = known
        .iter()
        .filter(|k| !over.iter().any(|(f, _)| f == *k))
        .collect();
    assert!(new.is_empty(), "files over {MAX_LINES} lines: {new:?}");
    assert!(
        gone.is_empty(),
        "split: take them out of KNOWN_LONG_FILES: {gone:?}"
    );
}

#[test]
fn only_the_events_module_logs_and_counts() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let events = src().join("events");
    let scattered: BTreeMap<String, Vec<&str>> = files
        .iter()
        .filter(|f| !f.starts_with(&events))
        .filter_map(|f| {
            let calls = event_calls(&code_only(&fs::read_to_string(f).expect("read source")));
            let rel = f.strip_prefix(src()).unwrap_or(f).display().to_string();
            (!calls.is_empty()).then_some((rel, calls))
        })
        .collect();
    let known: BTreeSet<&str> = KNOWN_SCATTERED_EVENTS.iter().copied().collect();
    let new: Vec<_> = scattered
        .iter()
        .filter(|(f, _)| !known.contains(f.as_str()))
        .collect();
    let gone: Vec<_> = known
        .iter()
        .filter(|k| !scattered.contains_key(**k))
        .collect();
    assert!(
        new.is_empty(),
        "files that log or count outside src/events/ (make each an event struct there): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "converted: take them out of KNOWN_SCATTERED_EVENTS: {gone:?}"
    );
}

/// Names a type may not take: they shadow the prelude in every file
/// that imports the type.
const PRELUDE: &[&str] = &[
    "Send", "Sync", "Sized", "Copy", "Clone", "Drop", "Box", "Option", "Result", "Vec", "String",
    "Iterator", "Default",
];

/// File names that say "no home" instead of what is inside.
const GRAB_BAGS: &[&str] = &["util.rs", "utils.rs", "misc.rs", "helpers.rs", "common.rs"];

/// The types `code` declares whose name is in `PRELUDE`.
fn prelude_shadows(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["struct ", "enum ", "type ", "trait ", "union "] {
        for (i, _) in code.match_indices(kw) {
            if i > 0 && code[..i].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let name: String = code[i + kw.len()..]
                .chars()
                .take_while(|c| is_ident(*c))
                .collect();
            if PRELUDE.contains(&name.as_str()) {
                out.push(format!("{}{name}", kw));
            }
        }
    }
    out
}

#[test]
fn no_type_shadows_the_prelude_and_no_file_is_a_grab_bag() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap().display().to_string();
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if GRAB_BAGS.contains(&name) {
            bad.push(format!("{rel}: a grab-bag file name"));
        }
        let code = code_only(&fs::read_to_string(f).expect("read"));
        for s in prelude_shadows(&code) {
            bad.push(format!("{rel}: `{s}` shadows the prelude"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_shadow_scanner_finds_declarations_not_uses() {
    assert_eq!(
        prelude_shadows("pub struct Send(pub Envelope);\nenum Result { A }"),
        ["struct Send", "enum Result"]
    );
    assert!(
        prelude_shadows("struct SendRemote; fn f() -> Result<(), E> {} // struct x").is_empty()
    );
    assert!(prelude_shadows("substruct Send").is_empty());
}

#[test]
fn the_event_scanner_finds_tracing_and_metrics_calls_but_not_their_namesakes() {
    for code in [
        "tracing::info!(\"x\")",
        "let c = metrics::counter!(\"n\");",
        "::tracing::warn!(x)",
        "use tracing::{debug, warn};",
        "use tracing;",
        "use std::fmt;\nuse metrics as m;",
        "    info!(\"bare\");",
        "x.map(|_| error!(\"bare\"))",
        "counter!(\"n\").increment(1)",
        "describe_gauge!(\"g\", \"help\")",
        "#[tracing::instrument]",
    ] {
        assert!(!event_calls(code).is_empty(), "missed in {code:?}");
    }
    for code in [
        "events::dns::SrvTargetEmpty { host }.emit()",
        "crate::events::metrics::Thing",
        "tracing_subscriber::EnvFilter::new(\"info\")",
        "S2sMetrics::new()",
        "self.metrics.stanza_in(k)",
        "let tracing = 1;",
        "my_info!(x); log_error!(y)",
        "s2s_metrics::x()",
    ] {
        assert!(
            event_calls(code).is_empty(),
            "false hit in {code:?}: {:?}",
            event_calls(code)
        );
    }
    assert_eq!(
        event_calls(&code_only("fn a() {} // tracing::info!(\"a comment\")")),
        Vec::<&str>::new()
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_the_line_counter_skips_tests() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    g.get_mut("c").map(|d| d.remove("a"));
    assert!(cycles(&g).is_empty());

    let text = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() {\n    }\n}\nfn c() {}\n";
    assert_eq!(lines_without_tests(text), 2);
    assert_eq!(
        crate_refs("use crate::x::Y; $crate::z; crate::w::f(); notcrate::v"),
        ["w", "x"].into_iter().map(String::from).collect()
    );
}
