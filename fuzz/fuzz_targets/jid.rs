//! JID parsing and normalisation.
//!
//! Invariants: no panic; normalising is idempotent (the normalised string
//! parses to the same JID); the bare and full parsers agree with the
//! general one; parts stay within the RFC 7622 size limit.
#![no_main]

use fedrouter::jid::{BareJid, FullJid, Jid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Jid::parse(s);
    assert_eq!(
        BareJid::parse(s).ok().map(Jid::Bare),
        parsed.clone().ok().filter(|j| !j.is_full())
    );
    assert_eq!(
        FullJid::parse(s).ok().map(Jid::Full),
        parsed.clone().ok().filter(Jid::is_full)
    );
    let Ok(jid) = parsed else {
        return;
    };
    let normal = jid.to_string();
    let again = Jid::parse(&normal)
        .unwrap_or_else(|e| panic!("{s:?} normalised to {normal:?}, which does not parse: {e}"));
    assert_eq!(again, jid, "{s:?} -> {normal:?} is not a fixed point");
    assert_eq!(again.to_string(), normal);
    let bare = jid.bare();
    assert!(bare.domain().len() <= 1023);
    assert!(
        bare.local()
            .is_none_or(|l| !l.is_empty() && l.len() <= 1023)
    );
    assert!(
        jid.resource()
            .is_none_or(|r| !r.is_empty() && r.len() <= 1023)
    );
    assert_eq!(bare.is_domain(), bare.local().is_none());
});
