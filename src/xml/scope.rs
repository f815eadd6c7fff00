//! The namespace prefixes in scope while the framer reads a stream: those
//! declared on the stream header (in scope for the whole stream) and those
//! declared inside the stanza being read (until their element ends).
//!
//! Owns the bindings only; which tags declare or use a prefix is the
//! framer's business. Every lookup costs O(1) whatever the number of
//! declarations (a hash of the prefix, then the innermost binding with that
//! hash), so a stanza costs O(declarations + uses) rather than their
//! product. The hasher is keyed per framer, so a peer cannot choose
//! prefixes that collide. Once warm it allocates nothing per stanza.
//!
//! It also notes which header bindings a stanza used, so the framer can
//! re-declare them on the stanza: a stanza forwarded to another stream
//! must not depend on this stream's header.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::error::{StreamCondition, StreamError};
use crate::xml::lex::{Span, span_of};
use crate::xml::ns::NS_STREAMS;

/// Most prefix declarations in scope at once: on the stream header, and
/// inside one stanza. Real streams and stanzas declare a handful; the cap
/// bounds the memory a hostile peer can make the framer hold. Beyond it the
/// stream fails with `policy-violation` (RFC 6120 §4.9.3.17: a local
/// service policy, like the stanza size limit).
pub const MAX_PREFIX_DECLARATIONS: usize = 1024;

const NONE: u32 = u32::MAX;

/// Up to this many header prefixes are looked up by a scan of the list:
/// a constant bound, and no index allocated for the one or two prefixes of
/// nearly every stream (an idle session should cost little).
const HEADER_SCAN: usize = 8;

/// `flags` bits of a header binding.
const REDECLARE: u8 = 1;
const USED: u8 = 2;

/// A prefix declared inside the current stanza.
#[derive(Clone, Copy)]
struct Binding {
    /// The prefix, as a span into the framer's buffer.
    prefix: Span,
    hash: u64,
    /// The binding this one shadows in `heads`, or NONE.
    prev: u32,
    /// Depth of the declaring element (the stanza is 1).
    depth: u32,
}

pub(super) struct Scope {
    hasher: RandomState,
    /// `xmlns:prefix` declarations of the stream header, in order.
    header: Vec<(String, String)>,
    /// Prefix → index into `header`, when there are more than
    /// [`HEADER_SCAN`].
    header_index: HashMap<Box<[u8]>, u32>,
    /// Per header binding: REDECLARE when a stanza that uses it must
    /// declare it again (not `stream` bound to the streams namespace, which
    /// every stream fedrouter writes declares too); USED when the current
    /// stanza did.
    flags: Vec<u8>,
    /// Bindings declared inside the stanza, outermost first.
    inner: Vec<Binding>,
    /// Prefix hash → index in `inner` of the innermost binding with it.
    heads: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Header bindings the current stanza used and must re-declare.
    used: Vec<u32>,
}

impl Scope {
    pub(super) fn new() -> Scope {
        Scope {
            hasher: RandomState::new(),
            header: Vec::new(),
            header_index: HashMap::new(),
            flags: Vec::new(),
            inner: Vec::new(),
            heads: HashMap::default(),
            used: Vec::new(),
        }
    }

    /// Forgets everything (a new stream).
    pub(super) fn reset(&mut self) {
        self.end_stanza();
        self.header.clear();
        self.header_index.clear();
        self.flags.clear();
    }

    /// Binds the header's prefixes for the rest of the stream. The caller
    /// has checked each declaration; a prefix declared twice is a duplicate
    /// attribute and never gets here.
    pub(super) fn set_header(&mut self, prefixes: &[(String, String)]) -> Result<(), StreamError> {
        self.reset();
        if prefixes.len() > MAX_PREFIX_DECLARATIONS {
            return Err(too_many());
        }
        for (i, (p, uri)) in prefixes.iter().enumerate() {
            if prefixes.len() > HEADER_SCAN {
                self.header_index.insert(p.as_bytes().into(), i as u32);
            }
            let always_there = p == "stream" && uri == NS_STREAMS;
            self.flags.push(if always_there { 0 } else { REDECLARE });
        }
        self.header.extend_from_slice(prefixes);
        Ok(())
    }

    /// Where `prefix` is in `header`.
    fn header_position(&self, prefix: &[u8]) -> Option<usize> {
        if self.header.len() > HEADER_SCAN {
            self.header_index.get(prefix).map(|&i| i as usize)
        } else {
            self.header.iter().position(|(p, _)| p.as_bytes() == prefix)
        }
    }

    /// The header's declarations.
    pub(super) fn header(&self) -> &[(String, String)] {
        &self.header
    }

    /// The namespace a header prefix is bound to, if it is.
    pub(super) fn header_ns(&self, prefix: &[u8]) -> Option<&str> {
        let i = self.header_position(prefix)?;
        self.header.get(i).map(|(_, uri)| uri.as_str())
    }

    /// Number of bindings declared inside the stanza (for [`Scope::truncate`]).
    pub(super) fn mark(&self) -> usize {
        self.inner.len()
    }

    /// Binds the prefix `b[prefix]` for the element at `depth`.
    pub(super) fn declare(
        &mut self,
        b: &[u8],
        prefix: Span,
        depth: u32,
    ) -> Result<(), StreamError> {
        if self.inner.len() >= MAX_PREFIX_DECLARATIONS {
            return Err(too_many());
        }
        let hash = self.hasher.hash_one(span_of(b, prefix));
        let at = self.inner.len() as u32;
        let prev = self.heads.insert(hash, at).unwrap_or(NONE);
        self.inner.push(Binding {
            prefix,
            hash,
            prev,
            depth,
        });
        Ok(())
    }

    /// True when `prefix` is bound here; a header binding the stanza uses
    /// is noted for re-declaration.
    pub(super) fn resolve(&mut self, b: &[u8], prefix: &[u8]) -> bool {
        if prefix == b"xml" {
            return true;
        }
        if !self.inner.is_empty() {
            let hash = self.hasher.hash_one(prefix);
            let mut at = self.heads.get(&hash).copied().unwrap_or(NONE);
            while let Some(d) = self.inner.get(at as usize) {
                if span_of(b, d.prefix) == prefix {
                    return true;
                }
                at = d.prev;
            }
        }
        let Some(i) = self.header_position(prefix) else {
            return false;
        };
        if let Some(f) = self.flags.get_mut(i)
            && *f == REDECLARE
        {
            *f |= USED;
            self.used.push(i as u32);
        }
        true
    }

    /// Drops the bindings of elements at `depth` and deeper.
    pub(super) fn end_element(&mut self, depth: u32) {
        while let Some(d) = self.inner.last()
            && d.depth >= depth
        {
            self.pop();
        }
    }

    /// Drops the bindings declared since `mark` (an empty element's).
    pub(super) fn truncate(&mut self, mark: usize) {
        while self.inner.len() > mark {
            self.pop();
        }
    }

    fn pop(&mut self) {
        let Some(d) = self.inner.pop() else { return };
        if d.prev == NONE {
            self.heads.remove(&d.hash);
        } else {
            self.heads.insert(d.hash, d.prev);
        }
    }

    /// The header bindings the stanza used that need re-declaring, in
    /// header order of first use.
    pub(super) fn used(&self) -> impl Iterator<Item = (&str, &str)> {
        self.used.iter().filter_map(|&i| {
            self.header
                .get(i as usize)
                .map(|(p, uri)| (p.as_str(), uri.as_str()))
        })
    }

    pub(super) fn uses_header(&self) -> bool {
        !self.used.is_empty()
    }

    /// Forgets the stanza's bindings and uses.
    pub(super) fn end_stanza(&mut self) {
        if !self.inner.is_empty() {
            self.inner.clear();
            self.heads.clear();
        }
        for i in self.used.drain(..) {
            if let Some(f) = self.flags.get_mut(i as usize) {
                *f &= !USED;
            }
        }
    }
}

fn too_many() -> StreamError {
    StreamError::with_text(
        StreamCondition::PolicyViolation,
        "too many namespace declarations",
    )
}

/// The keys of `heads` are already keyed hashes: use them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
