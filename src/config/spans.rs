//! Where things are in the TOML text: a flat index of every key, table and
//! array element of the parsed document with its dotted path and byte
//! spans, so that any error — the parser's, serde's or our own validation's
//! — can be turned into a line, a column and a key.
//!
//! The toml crate's errors carry only a byte span (their key list is
//! private), and our validation runs on plain values, so both sides meet
//! here: span → path for serde errors, path → span for validation errors.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

struct Node {
    path: String,
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// A `[table]` or `[[array]]` header: its value span is the header line.
    header: bool,
}

pub(super) struct DocIndex<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

impl<'a> DocIndex<'a> {
    pub(super) fn new(text: &'a str, root: &DeTable<'_>) -> DocIndex<'a> {
        let mut index = DocIndex {
            text,
            nodes: Vec::new(),
        };
        index.walk_table(root, "");
        index
    }

    fn is_header(&self, value: &DeValue<'_>, span: &Range<usize>) -> bool {
        matches!(value, DeValue::Table(_)) && self.text.as_bytes().get(span.start) == Some(&b'[')
    }

    fn walk_table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let path = join_key(prefix, key.get_ref());
            let span = value.span();
            self.nodes.push(Node {
                path: path.clone(),
                key: Some(key.span()),
                header: self.is_header(value.get_ref(), &span),
                value: span,
            });
            self.walk_value(value.get_ref(), &path);
        }
    }

    fn walk_value(&mut self, value: &DeValue<'_>, path: &str) {
        match value {
            DeValue::Table(table) => self.walk_table(table, path),
            DeValue::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    let span = element.span();
                    self.nodes.push(Node {
                        path: path.clone(),
                        key: None,
                        header: self.is_header(element.get_ref(), &span),
                        value: span,
                    });
                    self.walk_value(element.get_ref(), &path);
                }
            }
            _ => {}
        }
    }

    /// `offset` clamped to the text and moved back to a char boundary, so
    /// a span from any source can be used to slice the text.
    fn floor(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = self.floor(offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// The span to point at for a key path: the value for a leaf, the header
    /// for a table. `None` when the document does not contain the path.
    pub(super) fn span_of(&self, path: &str) -> Option<Range<usize>> {
        self.nodes
            .iter()
            .find(|n| n.path == path)
            .map(|n| n.value.clone())
    }

    /// The innermost key, table or element whose key or value covers `span`.
    pub(super) fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        let covers = |r: &Range<usize>| r.start <= span.start && span.end <= r.end;
        self.nodes
            .iter()
            .flat_map(|n| {
                let by_key = n.key.as_ref().filter(|r| covers(r)).map(|r| (n, r.len()));
                let by_value = Some(&n.value).filter(|r| covers(r)).map(|r| (n, r.len()));
                by_key.into_iter().chain(by_value)
            })
            // Smallest span wins; on a tie (an array of tables and its
            // element share the header span) the deeper path wins.
            .min_by_key(|(n, len)| (*len, usize::MAX - n.path.len()))
            .map(|(n, _)| n.path.as_str())
    }

    /// Best guess at the key a syntax error is about, for text the parser
    /// could not make sense of: the key in the recovered document if there
    /// is one, else the `[table]` above the error plus the `key =` (or the
    /// header) written on the error's line.
    pub(super) fn syntax_key(&self, span: &Range<usize>) -> Option<String> {
        if let Some(path) = self.path_at(span) {
            return Some(path.to_owned());
        }
        let offset = self.floor(span.start);
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text[line_start..line_end].trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or(name);
            return normalise_written_key(name);
        }
        let table = self
            .nodes
            .iter()
            .filter(|n| n.header && n.value.start < line_start)
            .max_by_key(|n| n.value.start)
            .map(|n| n.path.as_str())
            .unwrap_or("");
        let key = line
            .split_once('=')
            .and_then(|(k, _)| normalise_written_key(k));
        match (table, key) {
            ("", key) => key,
            (table, None) => Some(table.to_owned()),
            (table, Some(key)) => Some(format!("{table}.{key}")),
        }
    }
}

/// `a . b` → `a.b`, if the text looks like a (dotted, bare or quoted) key.
fn normalise_written_key(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split('.').map(str::trim).collect();
    let ok = parts.iter().all(|p| {
        !p.is_empty()
            && (p.bytes().all(is_bare_key_byte)
                || (p.len() >= 2 && (p.starts_with('"') && p.ends_with('"'))))
    });
    ok.then(|| parts.join("."))
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Appends a key to a dotted path, quoting it when it is not a bare key.
pub(super) fn join_key(prefix: &str, key: &str) -> String {
    let key = if !key.is_empty() && key.bytes().all(is_bare_key_byte) {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}
