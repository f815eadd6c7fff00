//! The framer over a never-ending stream that arrives in random chunks.
//!
//! Input: byte 0 seeds the chunk sizes, byte 1 picks the content namespace,
//! the stanza size limit and whether bytes go in through `fill_from` (the
//! socket path, bounded) or `feed`; the rest is the stream.
//!
//! Invariants: no panic; every stanza is a slice of the input that starts
//! with `<` and ends with `>`, in input order, no larger than the limit
//! (or, when it uses prefixes bound only on the stream header, that slice
//! with their declarations added right after its name);
//! its header spans lie inside its bytes and agree with a re-parse of its
//! first tag; nothing comes after `</stream:stream>`; an error is final.
#![no_main]

use bytes::Bytes;
use fedrouter::xml::ns::{NS_CLIENT, NS_SERVER};
use fedrouter::xml::{Element, Framer, FramerEvent, Stanza};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [seed, mode, stream @ ..] = data else {
        return;
    };
    let ns = if mode & 1 == 0 { NS_CLIENT } else { NS_SERVER };
    let max = if mode & 2 == 0 { 65536 } else { 256 };
    let bounded = mode & 4 != 0;
    let mut framer = Framer::new(ns, max);
    let mut check = Checker::new(stream, max);
    let mut rng = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (next_rand(&mut rng) as usize % 64 + 1).min(rest.len());
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        while !chunk.is_empty() {
            let taken = if bounded {
                framer.fill_from(chunk)
            } else {
                framer.feed(chunk);
                chunk.len()
            };
            assert!(taken >= 1, "fill_from took nothing of a non-empty chunk");
            chunk = &chunk[taken..];
            if !check.drain(&mut framer) {
                return;
            }
        }
    }
});

/// xorshift32: chunk sizes that depend on the seed byte only.
fn next_rand(x: &mut u32) -> u32 {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    *x
}

struct Checker<'a> {
    input: &'a [u8],
    /// Where the previous stanza ended in `input`.
    cursor: usize,
    max: usize,
    closed: bool,
    prefixes: Vec<(String, String)>,
}

impl<'a> Checker<'a> {
    fn new(input: &'a [u8], max: usize) -> Self {
        Checker {
            input,
            cursor: 0,
            max,
            closed: false,
            prefixes: Vec::new(),
        }
    }

    /// Pulls every ready event; false once the framer failed.
    fn drain(&mut self, framer: &mut Framer) -> bool {
        loop {
            match framer.next() {
                Ok(None) => return true,
                Ok(Some(ev)) => {
                    assert!(!self.closed, "event after </stream:stream>: {ev:?}");
                    match ev {
                        FramerEvent::StreamOpen(h) => self.prefixes = h.prefixes.clone(),
                        FramerEvent::Stanza(s) => self.stanza(&s),
                        FramerEvent::StreamClose => self.closed = true,
                    }
                }
                Err(e) => {
                    assert_eq!(framer.next(), Err(e), "a framer error must be final");
                    return false;
                }
            }
        }
    }

    fn stanza(&mut self, s: &Stanza) {
        let b = s.bytes();
        assert!(b.len() >= 3 && b[0] == b'<' && b[b.len() - 1] == b'>');
        assert!(
            b.len() <= self.max,
            "stanza of {} bytes over the limit",
            b.len()
        );
        let (at, len) = original(&self.input[self.cursor..], b, s.name().len())
            .expect("stanza bytes are not a slice of the input after the previous stanza");
        self.cursor += at + len;

        let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
        let within = |v: Option<&str>| {
            v.is_none_or(|v| {
                let p = v.as_ptr() as usize;
                p >= range.start && p + v.len() <= range.end
            })
        };
        assert!(within(Some(s.name())), "name span outside the stanza");
        for raw in [s.to_raw(), s.from_raw(), s.type_raw(), s.id_raw()] {
            assert!(within(raw), "attribute span outside the stanza");
        }
        // Unescaping the header values must never fail or panic.
        let _ = (s.to(), s.from(), s.type_(), s.id(), s.kind(), s.xmlns());

        let again = Stanza::parse(Bytes::copy_from_slice(b)).expect("a framed stanza re-parses");
        assert_eq!(again.name(), s.name());
        assert_eq!(again.to_raw(), s.to_raw());
        assert_eq!(again.from_raw(), s.from_raw());
        assert_eq!(again.type_raw(), s.type_raw());
        assert_eq!(again.id_raw(), s.id_raw());

        // Code that needs the inside parses it deeper: that must not panic.
        let prefixes: Vec<(&str, &str)> = self
            .prefixes
            .iter()
            .map(|(p, n)| (p.as_str(), n.as_str()))
            .collect();
        let _ = Element::parse(b, NS_CLIENT, &prefixes);
    }
}

/// Where the stanza `b` came from in `hay`, and its length there: `b`
/// itself, or `b` less the `xmlns:p='…'` declarations the framer adds
/// right after the name for prefixes bound only on the stream header.
/// The earliest match wins: the stream may repeat a stanza's bytes later.
fn original(hay: &[u8], b: &[u8], name_len: usize) -> Option<(usize, usize)> {
    let mut best = find(hay, b).map(|at| (at, b.len()));
    let name_end = 1 + name_len;
    let mut rest = &b[name_end..];
    while let Some(r) = rest.strip_prefix(b" xmlns:") {
        let Some(q) = r.iter().position(|&c| c == b'\'') else {
            break;
        };
        let Some(close) = r[q + 1..].iter().position(|&c| c == b'\'') else {
            break;
        };
        rest = &r[q + 1 + close + 1..];
        let mut candidate = b[..name_end].to_vec();
        candidate.extend_from_slice(rest);
        if let Some(at) = find(hay, &candidate)
            && best.is_none_or(|(b, _)| at < b)
        {
            best = Some((at, candidate.len()));
        }
    }
    best
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
