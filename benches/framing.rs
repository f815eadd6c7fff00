//! Framing throughput: the fedrouter framer (all RFC 6120 §11 checks,
//! zero-copy stanza split) against bare quick-xml tokenisation of the same
//! bytes, over a realistic mixed s2s stream of ~2 MiB.
//!
//! `cargo bench --bench framing -- --quick --noplot`

use std::hint::black_box;
use std::time::Duration;

use bytes::BufMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedrouter::xml::ns::{NS_CLIENT, NS_SERVER};
use fedrouter::xml::{Framer, FramerEvent};
use quick_xml::Reader;
use quick_xml::events::Event;

/// A socket read.
const READ: usize = 16 * 1024;
const TARGET_BYTES: usize = 2 * 1024 * 1024;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "hello",
    "world",
    "the",
    "meeting",
    "is",
    "at",
    "noon",
    "&amp;",
    "&lt;3",
    "&#x263A;",
    "Grüße",
    "日本語",
    "😀",
    "ça",
    "va",
    "tomorrow",
    "okay",
    "&quot;quoted&quot;",
    "server",
    "federation",
    "a",
    "of",
];

fn words(rng: &mut Rng, out: &mut String, bytes: usize) {
    let stop = out.len() + bytes;
    while out.len() < stop {
        out.push_str(WORDS[rng.below(WORDS.len())]);
        out.push(' ');
    }
}

/// A deterministic mix: 50 % messages, 30 % presence, 20 % roster iq
/// results, 100 to 2000 bytes each, with the odd whitespace keepalive.
fn build_stream() -> (Vec<u8>, u64) {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5D);
    let mut s = String::with_capacity(TARGET_BYTES + 4096);
    s.push_str(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         to='b.example' from='a.example' id='b3nch' version='1.0'>",
    );
    let mut count = 0u64;
    while s.len() < TARGET_BYTES {
        let size = 100 + rng.below(1900);
        let start = s.len();
        let (from, to, id) = (rng.below(5000), rng.below(5000), count);
        match rng.below(10) {
            0..=4 => {
                s.push_str(&format!(
                    "<message from='user{from}@a.example/phone' to='friend{to}@b.example' type='chat' id='m{id}'><body>"
                ));
                words(&mut rng, &mut s, size.saturating_sub(190));
                s.push_str(
                    "</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                );
            }
            5..=7 if size < 300 => {
                s.push_str(&format!(
                    "<presence from='user{from}@a.example/phone' to='friend{to}@b.example'/>"
                ));
            }
            5..=7 => {
                s.push_str(&format!(
                    "<presence from='user{from}@a.example/phone' to='friend{to}@b.example'><show>away</show><status>"
                ));
                words(&mut rng, &mut s, size.saturating_sub(260));
                s.push_str(
                    "</status><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
                     node='https://example.org/client' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
                );
            }
            _ => {
                s.push_str(&format!(
                    "<iq type='result' id='r{id}' from='a.example' to='friend{to}@b.example/pc'><query xmlns='jabber:iq:roster' ver='v{id}'>"
                ));
                let stop = start + size;
                let mut n = 0;
                while s.len() + 120 < stop || n == 0 {
                    s.push_str(&format!(
                        "<item jid='contact{n}@c.example' name='Contact {n} &amp; Grüße' subscription='both'><group>Friends</group></item>"
                    ));
                    n += 1;
                }
                s.push_str("</query></iq>");
            }
        }
        count += 1;
        if rng.below(8) == 0 {
            s.push_str("\n ");
        }
    }
    s.push_str("</stream:stream>");
    (s.into_bytes(), count)
}

/// Feeds the stream in socket-sized reads through `read_buf` and drains
/// every event, as a session would.
fn frame_all(data: &[u8]) -> u64 {
    let mut f = Framer::new(NS_SERVER, 64 * 1024);
    let mut stanzas = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let mut buf = f.read_buf();
        let n = buf.remaining_mut().min(READ).min(rest.len());
        buf.put_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(ev) = f.next().expect("valid stream") {
            if let FramerEvent::Stanza(s) = &ev {
                stanzas += 1;
                black_box(s.to());
            }
            black_box(ev);
        }
    }
    stanzas
}

/// Every quick-xml event to Eof, with no checks and no stanza extraction.
fn tokenise_all(data: &[u8]) -> u64 {
    let mut r = Reader::from_reader(data);
    let mut events = 0;
    loop {
        match r.read_event().expect("valid stream") {
            Event::Eof => return events,
            e => {
                events += 1;
                black_box(e);
            }
        }
    }
}

fn framing(c: &mut Criterion) {
    let (data, stanzas) = build_stream();
    assert_eq!(frame_all(&data), stanzas);
    eprintln!("stream: {} bytes, {stanzas} stanzas", data.len());

    let mut g = c.benchmark_group("framing_bytes");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("framer", |b| b.iter(|| frame_all(black_box(&data))));
    g.bench_function("quick_xml_bare", |b| {
        b.iter(|| tokenise_all(black_box(&data)))
    });
    g.finish();

    let mut g = c.benchmark_group("framing_stanzas");
    g.throughput(Throughput::Elements(stanzas));
    g.bench_function("framer", |b| b.iter(|| frame_all(black_box(&data))));
    g.bench_function("quick_xml_bare", |b| {
        b.iter(|| tokenise_all(black_box(&data)))
    });
    g.finish();
}

const CLIENT_HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A framer past the stream header, with a limit no hostile case reaches.
fn open_framer() -> Framer {
    let mut f = Framer::new(NS_CLIENT, 1 << 20);
    f.feed(CLIENT_HEADER);
    assert!(matches!(f.next(), Ok(Some(FramerEvent::StreamOpen(_)))));
    f
}

/// Feeds `stanza` `chunk` bytes per read and returns the one stanza.
fn trickle(stanza: &[u8], chunk: usize) -> usize {
    let mut f = open_framer();
    let mut got = 0;
    for piece in stanza.chunks(chunk) {
        f.feed(piece);
        while let Some(ev) = f.next().expect("valid stanza") {
            if let FramerEvent::Stanza(s) = ev {
                got += s.bytes().len();
            }
        }
    }
    got
}

/// A start tag of `size` bytes whose attribute values are full of `>`, so
/// that every read of a trickled tag may be the one that completes it.
fn gt_tag(size: usize) -> Vec<u8> {
    let mut s = String::from("<message to='bob@localhost'");
    let mut i = 0;
    while s.len() + 40 < size {
        s.push_str(&format!(" a{i}='{}'", ">".repeat(24)));
        i += 1;
    }
    s.push_str("><body>hi</body></message>");
    s.into_bytes()
}

/// One element declaring `n` prefixes and using each on an attribute.
fn prefixed(n: usize) -> Vec<u8> {
    let mut s = String::from("<message to='bob@localhost'><x");
    for i in 0..n {
        s.push_str(&format!(" xmlns:p{i}='urn:p:{i}'"));
    }
    for i in 0..n {
        s.push_str(&format!(" p{i}:a='v'"));
    }
    s.push_str("/></message>");
    s.into_bytes()
}

/// Hostile shapes that must cost time linear in their size: compare the
/// per-byte figures of the two sizes of each case.
fn hostile(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing_hostile");
    g.sample_size(10);
    for size in [8 * 1024, 64 * 1024] {
        let tag = gt_tag(size);
        g.throughput(Throughput::Bytes(tag.len() as u64));
        g.bench_function(format!("trickled_1_byte/{}KiB", size / 1024), |b| {
            b.iter(|| assert_eq!(trickle(black_box(&tag), 1), tag.len()))
        });
    }
    for n in [100, 1000] {
        let s = prefixed(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("prefixed_names/{n}"), |b| {
            b.iter(|| assert_eq!(trickle(black_box(&s), READ), s.len()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = framing, hostile
}
criterion_main!(benches);
