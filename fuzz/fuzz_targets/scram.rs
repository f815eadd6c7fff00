//! SCRAM-SHA-1/-256 message parsing on both sides, and whole exchanges
//! with one message tampered with.
//!
//! Input: byte 0 bit 0 picks the hash, bit 1 whether the user is known,
//! bit 2 the mode. Mode 0 (parsing): the rest is client-first, NUL,
//! client-final, run through the server (fixed server nonce `SNONCE`, so
//! the fuzzer can echo it); the bytes after client-first also go to a
//! client as server-first and server-final. Mode 1 (tampering): byte 1
//! picks the message (client-first, server-first, client-final,
//! server-final), byte 2 the position, and the rest replaces that many
//! bytes there.
//!
//! Invariants: no panic; the server accepts a proof only in an untampered
//! exchange of the known user with the right password; the client accepts
//! only the genuine server signature.
#![no_main]

use std::sync::OnceLock;

use fedrouter::stream::scram::{ScramClient, ScramHash, ScramKeys, ScramServer};
use libfuzzer_sys::fuzz_target;

/// Low so each run is cheap; the code path is the same as with 4096.
const ITERATIONS: u32 = 16;
const SERVER_NONCE: &str = "SNONCE";
const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

fn keys(h: ScramHash) -> &'static ScramKeys {
    static KEYS: OnceLock<[ScramKeys; 2]> = OnceLock::new();
    let k = KEYS.get_or_init(|| {
        let derive = |h| {
            ScramKeys::derive(h, "pencil", b"salt of alice..!", ITERATIONS).expect("derive keys")
        };
        [derive(ScramHash::Sha1), derive(ScramHash::Sha256)]
    });
    &k[usize::from(h == ScramHash::Sha256)]
}

/// PBKDF2 with a fuzzer-chosen count is slow but not a bug: the client
/// caps it at `MAX_CLIENT_ITERATIONS`, and that path is covered by unit
/// tests. Skip counts that would only make the fuzzer slow.
fn too_slow(server_first: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(server_first) else {
        return false;
    };
    s.split(',')
        .nth(2)
        .and_then(|f| f.strip_prefix("i="))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n > 4096)
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let hash = if mode & 1 == 0 {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    };
    let known = mode & 2 != 0;
    if mode & 4 == 0 {
        parse(hash, known, rest);
    } else if let [which, at, patch @ ..] = rest {
        tamper(hash, known, *which & 3, usize::from(*at), patch);
    }
});

fn parse(hash: ScramHash, known: bool, data: &[u8]) {
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // The client side reads what a server sends.
    if let Ok((mut client, _)) = ScramClient::with_nonce(hash, "alice", "pencil", "c") {
        if !too_slow(first) && client.handle_server_first(first).is_ok() {
            let _ = client.verify_server_final(last);
        }
    }
    let Ok((server, user, _authzid)) = ScramServer::start_with_nonce(hash, first, SERVER_NONCE)
    else {
        return;
    };
    assert!(!user.is_empty());
    let k = (known && user == "alice").then(|| keys(hash));
    let Ok((server, _server_first)) = server.server_first(k, ITERATIONS) else {
        return;
    };
    // Nobody who does not know the password can produce the proof.
    assert!(server.finish(last).is_err(), "accepted a forged proof");
}

fn tamper(hash: ScramHash, known: bool, which: u8, at: usize, patch: &[u8]) {
    let password = if known { "pencil" } else { "not the password" };
    let patched = |msg: &mut Vec<u8>, step: u8| {
        if which == step {
            let at = at.min(msg.len());
            let end = (at + patch.len()).min(msg.len());
            msg.splice(at..end, patch.iter().copied());
        }
    };
    let Ok((mut client, mut first)) =
        ScramClient::with_nonce(hash, "alice", password, CLIENT_NONCE)
    else {
        return;
    };
    let genuine_first = first.clone();
    patched(&mut first, 0);
    let Ok((server, user, _)) = ScramServer::start_with_nonce(hash, &first, SERVER_NONCE) else {
        return;
    };
    let k = (user == "alice").then(|| keys(hash));
    let Ok((server, mut server_first)) = server.server_first(k, ITERATIONS) else {
        return;
    };
    let genuine_server_first = server_first.clone();
    patched(&mut server_first, 1);
    if too_slow(&server_first) {
        return;
    }
    let Ok(mut last) = client.handle_server_first(&server_first) else {
        return;
    };
    let genuine_last = last.clone();
    patched(&mut last, 2);
    let untampered = first == genuine_first && server_first == genuine_server_first;
    let Ok(mut server_final) = server.finish(&last) else {
        assert!(
            !(known && untampered && last == genuine_last),
            "refused the right password"
        );
        return;
    };
    assert!(
        known && untampered && last == genuine_last,
        "accepted a tampered exchange or a wrong password"
    );
    let genuine_final = server_final.clone();
    patched(&mut server_final, 3);
    let ok = client.verify_server_final(&server_final).is_ok();
    // Extensions after the verifier are allowed (RFC 5802 §7), in UTF-8.
    let verifier = |m: &[u8]| {
        let m = std::str::from_utf8(m).ok()?;
        m.split(',').next().map(str::to_owned)
    };
    assert_eq!(
        ok,
        verifier(&server_final).is_some() && verifier(&server_final) == verifier(&genuine_final),
        "client verdict on server-final"
    );
}
