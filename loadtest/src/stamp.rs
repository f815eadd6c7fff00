//! What each test message carries so the receiving side knows who sent it
//! to whom, which one it is, and when it left: the body starts with
//! `lt:<sender>:<recipient>:<seq>:<nanos>:` followed by padding.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending stream's index (its window is released on arrival).
    pub sender: u32,
    /// The intended recipient's index.
    pub recipient: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

const MARK: &[u8] = b"<body>lt:";

/// Appends a chat message carrying `st` to `out`. `from` is set on s2s
/// streams (c2s senders are stamped by the server).
pub fn write_message(out: &mut Vec<u8>, from: Option<&str>, to: &str, st: Stamp, pad: &[u8]) {
    out.extend_from_slice(b"<message type='chat' to='");
    out.extend_from_slice(to.as_bytes());
    if let Some(f) = from {
        out.extend_from_slice(b"' from='");
        out.extend_from_slice(f.as_bytes());
    }
    out.extend_from_slice(b"'>");
    out.extend_from_slice(MARK);
    let _ = write!(
        out,
        "{}:{}:{}:{}:",
        st.sender, st.recipient, st.seq, st.sent_ns
    );
    out.extend_from_slice(pad);
    out.extend_from_slice(b"</body></message>");
}

/// The stamp in a message's bytes, if it carries one.
pub fn find(bytes: &[u8]) -> Option<Stamp> {
    let at = memchr::memmem::find(bytes, MARK)? + MARK.len();
    let mut it = bytes[at..].split(|b| *b == b':');
    let mut num = || -> Option<u64> { std::str::from_utf8(it.next()?).ok()?.parse().ok() };
    Some(Stamp {
        sender: u32::try_from(num()?).ok()?,
        recipient: u32::try_from(num()?).ok()?,
        seq: num()?,
        sent_ns: num()?,
    })
}

/// The number in a JID's local part after `prefix` (`c17@r3.lt.test` with
/// prefix `c` → 17).
pub fn index_in(jid: &str, prefix: &str) -> Option<u32> {
    let local = jid.split('@').next()?;
    local.strip_prefix(prefix)?.parse().ok()
}

/// `n` bytes of padding for message bodies.
pub fn padding(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip() {
        let st = Stamp {
            sender: 3,
            recipient: 99,
            seq: 123_456,
            sent_ns: 987_654_321,
        };
        let mut out = Vec::new();
        write_message(&mut out, Some("c1@r1.lt.test"), "lt1@localhost", st, b"xyz");
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.starts_with("<message type='chat' to='lt1@localhost' from='c1@r1.lt.test'>"));
        assert_eq!(find(&out), Some(st));
        // As delivered by a server: attributes rewritten, body intact.
        let delivered = s.replace(" from='c1@r1.lt.test'", " from='c1@r1.lt.test/x' id='9'");
        assert_eq!(find(delivered.as_bytes()), Some(st));
        assert_eq!(find(b"<message><body>hello</body></message>"), None);
        assert_eq!(find(b"<message><body>lt:1:2:x:4:</body></message>"), None);
    }

    #[test]
    fn indices_come_from_the_local_part() {
        assert_eq!(index_in("c17@r3.lt.test", "c"), Some(17));
        assert_eq!(index_in("lt4@localhost/res", "lt"), Some(4));
        assert_eq!(index_in("x4@localhost", "lt"), None);
    }
}
