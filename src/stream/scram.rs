//! SCRAM (RFC 5802, RFC 7677) without I/O, for both ends: the server side
//! used by c2s SASL, the client side used by fedrouter's own test and load
//! client, and the derivation and checking of the [`Credentials`] the store
//! keeps instead of the password (the types themselves are storage's, in
//! `storage::credentials`, so the store does not depend on this module).
//!
//! Only SCRAM-SHA-1 and SCRAM-SHA-256 without channel binding are spoken:
//! the gs2 header must be `n,,` or `y,,` (we never advertise `-PLUS`, so a
//! `y` client is not being downgraded), and `p=` is refused with
//! [`ScramError::ChannelBindingUnsupported`].
//!
//! This module owns message syntax and the key arithmetic; it must not know
//! about XML, sockets, the store or which authzid a user may act as.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::random::{self, RandomUnavailable};

/// The most iterations a [`ScramClient`] will compute for a server. A
/// hostile server could otherwise pin a client's CPU with `i=4294967295`.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

pub use crate::storage::{Credentials, ScramKeys};

const SALT_LEN: usize = 16;
/// Random bytes in a nonce (base64-encoded on the wire, so never a comma).
const NONCE_BYTES: usize = 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn mechanism_name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Mechanism names are case-sensitive upper case (RFC 4422 §3.1).
    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        }
    }

    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    fn output_len(self) -> usize {
        self.digest_alg().output_len()
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_alg(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }

    /// `Hi()` of RFC 5802 §2.2, which is PBKDF2 with one output block.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        #[cfg(test)]
        derivations::record(iterations.get());
        let mut out = vec![0u8; self.output_len()];
        pbkdf2::derive(self.pbkdf2_alg(), iterations, salt, password, &mut out);
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// The message does not follow RFC 5802 §7 syntax (or uses a feature
    /// it reserves, like a mandatory `m=` extension).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=`); we offer no `-PLUS`.
    #[error("channel binding requested but not supported")]
    ChannelBindingUnsupported,
    /// Wrong password, unknown user, or a forged proof.
    #[error("invalid client proof")]
    InvalidProof,
    /// Client side: the server does not know our password.
    #[error("server signature does not verify")]
    BadServerSignature,
    /// Client side: the server ended the exchange with `e=`.
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    /// Client side: the server wants more iterations than we compute.
    #[error("server asks for {0} iterations, above the client limit")]
    TooManyIterations(u32),
    /// A username or password that SASLprep refuses, or an empty password.
    #[error("username or password refused by SASLprep")]
    Saslprep,
    /// A message arrived at the wrong step.
    #[error("SCRAM message out of order")]
    OutOfOrder,
    /// No salt or nonce could be made: the exchange is refused rather
    /// than run with predictable values.
    #[error("{0}")]
    Random(#[from] RandomUnavailable),
}

impl ScramError {
    /// The RFC 6120 §6.5 condition to put in `<failure/>`. Client-side
    /// errors (which the client answers with `<abort/>`) map to `aborted`.
    pub fn sasl_condition(&self) -> &'static str {
        match self {
            // A `p=` flag under a non-PLUS mechanism name violates the
            // mechanism's syntax, which is what malformed-request covers.
            ScramError::Malformed(_)
            | ScramError::ChannelBindingUnsupported
            | ScramError::Saslprep
            | ScramError::OutOfOrder => "malformed-request",
            ScramError::InvalidProof => "not-authorized",
            ScramError::Random(_) => "temporary-auth-failure",
            ScramError::BadServerSignature
            | ScramError::ServerError(_)
            | ScramError::TooManyIterations(_) => "aborted",
        }
    }
}

impl ScramKeys {
    /// Derives the keys for an already SASLprep'd password with a given salt.
    /// Public so tests can reproduce the RFC examples.
    pub fn derive(
        hash: ScramHash,
        prepared_password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramKeys, ScramError> {
        let iters =
            NonZeroU32::new(iterations).ok_or(ScramError::Malformed("iteration count is 0"))?;
        let salted = hash.salted_password(prepared_password.as_bytes(), salt, iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        Ok(ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.h(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        })
    }
}

impl Credentials {
    /// Derives fresh keys with random 16-byte salts (one per hash).
    pub fn from_password(password: &str, iterations: u32) -> Result<Credentials, ScramError> {
        let prepared = prep_password(password)?;
        Ok(Credentials {
            sha1: ScramKeys::derive(
                ScramHash::Sha1,
                &prepared,
                &random::bytes(SALT_LEN)?,
                iterations,
            )?,
            sha256: ScramKeys::derive(
                ScramHash::Sha256,
                &prepared,
                &random::bytes(SALT_LEN)?,
                iterations,
            )?,
        })
    }

    pub fn keys(&self, h: ScramHash) -> &ScramKeys {
        match h {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }

    /// For SASL PLAIN (only over TLS): recompute and compare in constant time.
    pub fn verify_plain(&self, password: &str) -> bool {
        plain_matches(&self.sha256, password)
    }
}

/// SASL PLAIN's check of `password` for `username`, whose stored
/// credentials are `stored` (`None`: no such user). An unknown user costs
/// what a known one does: the same derivation runs, against the keys
/// [`ScramServerAwaitingKeys::server_first`] would show for that name
/// (`unknown_iterations`, the count new credentials get), and fails. So
/// neither the answer nor the time it takes says whether the user exists.
pub fn verify_plain(
    stored: Option<&Credentials>,
    username: &str,
    password: &str,
    unknown_iterations: u32,
) -> Result<bool, ScramError> {
    match stored {
        Some(c) => Ok(c.verify_plain(password)),
        None => {
            let fake = fake_keys(ScramHash::Sha256, username, unknown_iterations)?;
            let _ = plain_matches(&fake, password);
            Ok(false)
        }
    }
}

fn plain_matches(keys: &ScramKeys, password: &str) -> bool {
    let Ok(prepared) = prep_password(password) else {
        return false;
    };
    match ScramKeys::derive(ScramHash::Sha256, &prepared, &keys.salt, keys.iterations) {
        Ok(fresh) => {
            constant_time::verify_slices_are_equal(&fresh.stored_key, &keys.stored_key).is_ok()
        }
        Err(_) => false,
    }
}

fn prep_password(password: &str) -> Result<String, ScramError> {
    let p = stringprep::saslprep(password).map_err(|_| ScramError::Saslprep)?;
    if p.is_empty() {
        return Err(ScramError::Saslprep);
    }
    Ok(p.into_owned())
}

// The system RNG failing is not something a login can recover from, and
// continuing with predictable salts or nonces would be worse: callers get
// an error and refuse the exchange.
fn random_nonce() -> Result<String, ScramError> {
    Ok(B64.encode(random::bytes(NONCE_BYTES)?))
}

/// Per-process key for the fake keys of unknown users: stable for the
/// process lifetime, so repeated probes of one name see the same salt.
/// Made on first use; if the generator fails then, the next use tries again.
fn fake_salt_secret() -> Result<&'static [u8; 32], ScramError> {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(k) = SECRET.get() {
        return Ok(k);
    }
    let mut k = [0u8; 32];
    random::fill(&mut k)?;
    Ok(SECRET.get_or_init(|| k))
}

/// The keys an unknown user appears to have: every part derived from the
/// username and the per-process secret, so each probe of one name sees
/// the same salt and count, as it would for a real account. No proof can
/// match the stored key, and [`ScramServerFinal::finish`] refuses unknown
/// users whatever the proof.
fn fake_keys(hash: ScramHash, username: &str, iterations: u32) -> Result<ScramKeys, ScramError> {
    let secret = fake_salt_secret()?;
    let part = |label: &[u8], len: usize| {
        let mut msg = Vec::with_capacity(label.len() + username.len() + 16);
        msg.extend_from_slice(label);
        msg.push(0);
        msg.extend_from_slice(hash.mechanism_name().as_bytes());
        msg.push(0);
        msg.extend_from_slice(username.as_bytes());
        let mut v = ScramHash::Sha256.hmac(secret, &msg);
        v.truncate(len);
        v
    };
    Ok(ScramKeys {
        salt: part(b"salt", SALT_LEN),
        iterations,
        stored_key: part(b"stored", hash.output_len()),
        server_key: part(b"server", hash.output_len()),
    })
}

// ---------------------------------------------------------------------------
// Message syntax (RFC 5802 §7)

fn utf8(b: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(b).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// Splits `k=value` and checks the key.
fn attr(part: &str, key: u8) -> Result<&str, ScramError> {
    let b = part.as_bytes();
    if b.len() >= 2 && b[0] == key && b[1] == b'=' {
        Ok(&part[2..])
    } else {
        Err(ScramError::Malformed(match key {
            b'n' => "expected n= (username)",
            b'r' => "expected r= (nonce)",
            b's' => "expected s= (salt)",
            b'i' => "expected i= (iteration count)",
            b'c' => "expected c= (channel binding)",
            b'p' => "expected p= (proof)",
            _ => "unexpected attribute",
        }))
    }
}

fn is_mandatory_ext(part: &str) -> bool {
    part.starts_with("m=")
}

/// `saslname` decoding: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty saslname"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in saslname")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The longest nonce accepted. RFC 5802 sets no limit; real clients send
/// 20 to 40 characters, and the server echoes the nonce and keeps it for
/// the exchange, so a hostile one stays small whatever the stanza limit.
const MAX_NONCE_LEN: usize = 1024;

fn check_nonce(n: &str) -> Result<(), ScramError> {
    // printable = %x21-2B / %x2D-7E (the comma is excluded by splitting)
    if n.is_empty() || n.len() > MAX_NONCE_LEN || !n.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    Ok(())
}

fn b64_decode(s: &str, what: &'static str) -> Result<Vec<u8>, ScramError> {
    B64.decode(s).map_err(|_| ScramError::Malformed(what))
}

// ---------------------------------------------------------------------------
// Server side

/// Server side. Step 1: client-first → server-first. Step 2: client-final →
/// server-final (with `v=`) or error.
pub struct ScramServer;

impl ScramServer {
    /// Parses client-first-message; returns the username (SASLprep'd,
    /// `=2C`/`=3D` decoded) so the caller can look up credentials, and the
    /// authzid (`a=`), if any, which the caller must authorise.
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
    ) -> Result<(ScramServerAwaitingKeys, String, Option<String>), ScramError> {
        Self::start_inner(hash, client_first, None)
    }

    /// As [`start`](Self::start), with a fixed server nonce part (tests only:
    /// a predictable nonce defeats replay protection).
    pub fn start_with_nonce(
        hash: ScramHash,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(ScramServerAwaitingKeys, String, Option<String>), ScramError> {
        check_nonce(server_nonce)?;
        Self::start_inner(hash, client_first, Some(server_nonce.to_owned()))
    }

    fn start_inner(
        hash: ScramHash,
        client_first: &[u8],
        server_nonce: Option<String>,
    ) -> Result<(ScramServerAwaitingKeys, String, Option<String>), ScramError> {
        let msg = utf8(client_first)?;
        let mut parts = msg.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ScramError::Malformed("missing gs2 header"));
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("bad gs2 channel binding flag")),
        }
        let authzid = if authz.is_empty() {
            None
        } else if let Some(a) = authz.strip_prefix("a=") {
            Some(decode_saslname(a)?)
        } else {
            return Err(ScramError::Malformed("bad gs2 authzid"));
        };
        // The gs2 header, byte for byte, comes back base64'd in c=.
        let gs2_header = msg[..flag.len() + authz.len() + 2].to_owned();

        let mut fields = bare.split(',');
        let first = fields.next().unwrap_or("");
        if is_mandatory_ext(first) {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }
        let username = decode_saslname(attr(first, b'n')?)?;
        let username = stringprep::saslprep(&username)
            .map_err(|_| ScramError::Saslprep)?
            .into_owned();
        if username.is_empty() {
            return Err(ScramError::Saslprep);
        }
        let client_nonce = attr(fields.next().unwrap_or(""), b'r')?;
        check_nonce(client_nonce)?;
        // Optional extensions after the nonce are ignored (RFC 5802 §5.1).

        let server_nonce = match server_nonce {
            Some(n) => n,
            None => random_nonce()?,
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        Ok((
            ScramServerAwaitingKeys {
                hash,
                gs2_header,
                client_first_bare: bare.to_owned(),
                nonce,
                username: username.clone(),
            },
            username,
            authzid,
        ))
    }
}

/// The server after client-first, waiting for the caller's credential lookup.
#[derive(Debug)]
pub struct ScramServerAwaitingKeys {
    hash: ScramHash,
    gs2_header: String,
    client_first_bare: String,
    nonce: String,
    username: String,
}

impl ScramServerAwaitingKeys {
    /// `None` keys means an unknown user: we still answer with a plausible
    /// salt, derived from the username and a per-process secret, and
    /// `unknown_iterations` (the count new credentials get), so the answer
    /// does not reveal whether the user exists. Verification then always
    /// fails.
    pub fn server_first(
        self,
        keys: Option<&ScramKeys>,
        unknown_iterations: u32,
    ) -> Result<(ScramServerFinal, Vec<u8>), ScramError> {
        let (keys, known) = match keys {
            Some(k) => (k.clone(), true),
            None => (
                fake_keys(self.hash, &self.username, unknown_iterations)?,
                false,
            ),
        };
        let server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&keys.salt),
            keys.iterations
        );
        let out = server_first.clone().into_bytes();
        Ok((
            ScramServerFinal {
                hash: self.hash,
                gs2_header: self.gs2_header,
                client_first_bare: self.client_first_bare,
                server_first,
                nonce: self.nonce,
                keys,
                known,
            },
            out,
        ))
    }
}

/// The server after server-first, waiting for client-final.
#[derive(Debug)]
pub struct ScramServerFinal {
    hash: ScramHash,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    keys: ScramKeys,
    known: bool,
}

impl ScramServerFinal {
    /// Verifies the client proof; on success returns server-final
    /// (`v=...`), which the caller sends in `<success/>`.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = utf8(client_final)?;
        let (without_proof, proof) = msg
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("missing proof"))?;
        let proof = b64_decode(attr(proof, b'p')?, "bad base64 in proof")?;

        let mut fields = without_proof.split(',');
        let cbind = attr(fields.next().unwrap_or(""), b'c')?;
        let cbind = b64_decode(cbind, "bad base64 in channel binding")?;
        if cbind != self.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match gs2 header",
            ));
        }
        let nonce = attr(fields.next().unwrap_or(""), b'r')?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        if fields.any(is_mandatory_ext) {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }
        if proof.len() != self.hash.output_len() {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }

        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = self
            .hash
            .hmac(&self.keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let candidate = self.hash.h(&client_key);
        // Unknown users go through the same arithmetic so timing says
        // nothing about existence.
        let matches =
            constant_time::verify_slices_are_equal(&candidate, &self.keys.stored_key).is_ok();
        if !(matches && self.known) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = self
            .hash
            .hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

// ---------------------------------------------------------------------------
// Client side

/// Client side (used by fedrouter's own test/load client).
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    /// Set by `handle_server_first`: the server signature we expect.
    expected_server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange without authzid; returns client-first-message.
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        Self::with_nonce(hash, username, password, &random_nonce()?)
    }

    /// As [`new`](Self::new) with a fixed client nonce (tests only).
    pub fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        check_nonce(nonce)?;
        if nonce.contains(',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        let user = stringprep::saslprep(username).map_err(|_| ScramError::Saslprep)?;
        if user.is_empty() {
            return Err(ScramError::Saslprep);
        }
        let password = prep_password(password)?;
        let client_first_bare = format!("n={},r={nonce}", encode_saslname(&user));
        let client_first = format!("n,,{client_first_bare}").into_bytes();
        Ok((
            ScramClient {
                hash,
                password,
                client_first_bare,
                client_nonce: nonce.to_owned(),
                expected_server_signature: None,
            },
            client_first,
        ))
    }

    /// Consumes server-first-message; returns client-final-message.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if self.expected_server_signature.is_some() {
            return Err(ScramError::OutOfOrder);
        }
        let server_first = utf8(msg)?;
        let mut fields = server_first.split(',');
        let first = fields.next().unwrap_or("");
        if is_mandatory_ext(first) {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }
        let nonce = attr(first, b'r')?;
        check_nonce(nonce)?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let salt = b64_decode(
            attr(fields.next().unwrap_or(""), b's')?,
            "bad base64 in salt",
        )?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("empty salt"));
        }
        let iterations: u32 = attr(fields.next().unwrap_or(""), b'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("bad iteration count"))?;
        let iters =
            NonZeroU32::new(iterations).ok_or(ScramError::Malformed("iteration count is 0"))?;
        if iterations > MAX_CLIENT_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }

        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iters);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.h(&client_key);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: `v=` must match (constant time); `e=` is an error.
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or(ScramError::OutOfOrder)?;
        let msg = utf8(msg)?;
        let first = msg.split(',').next().unwrap_or("");
        if let Some(e) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let v = b64_decode(
            attr(first, b'v').map_err(|_| ScramError::Malformed("expected v= or e="))?,
            "bad base64 in server signature",
        )?;
        constant_time::verify_slices_are_equal(&v, expected)
            .map_err(|_| ScramError::BadServerSignature)
    }
}

/// Counts key derivations on this thread, so tests can check that a path
/// runs the same PBKDF2 work as another without timing anything.
#[cfg(test)]
pub(crate) mod derivations {
    use std::cell::Cell;

    thread_local! {
        static SEEN: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
    }

    pub fn record(iterations: u32) {
        SEEN.with(|c| {
            let (n, total) = c.get();
            c.set((n + 1, total + u64::from(iterations)));
        });
    }

    /// (derivations, total iterations) since the last call.
    pub fn take() -> (u32, u64) {
        SEEN.with(|c| c.replace((0, 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn run_rfc_example(
        hash: ScramHash,
        cnonce: &str,
        snonce: &str,
        salt_b64: &str,
        transcript: [&str; 4],
    ) {
        let (mut client, c1) = ScramClient::with_nonce(hash, "user", "pencil", cnonce).unwrap();
        assert_eq!(c1, b(transcript[0]));

        let salt = B64.decode(salt_b64).unwrap();
        let keys = ScramKeys::derive(hash, "pencil", &salt, 4096).unwrap();
        let (server, user, authz) = ScramServer::start_with_nonce(hash, &c1, snonce).unwrap();
        assert_eq!(user, "user");
        assert_eq!(authz, None);
        let (server, s1) = server.server_first(Some(&keys), TEST_ITERS).unwrap();
        assert_eq!(s1, b(transcript[1]));

        let c2 = client.handle_server_first(&s1).unwrap();
        assert_eq!(c2, b(transcript[2]));
        let s2 = server.finish(&c2).unwrap();
        assert_eq!(s2, b(transcript[3]));
        client.verify_server_final(&s2).unwrap();
    }

    #[test]
    fn the_rfc_5802_sha1_example_is_reproduced_byte_for_byte() {
        run_rfc_example(
            ScramHash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "QSXCR+Q6sek8bf92",
            [
                "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ],
        );
    }

    #[test]
    fn the_rfc_7677_sha256_example_is_reproduced_byte_for_byte() {
        run_rfc_example(
            ScramHash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            [
                "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ],
        );
    }

    /// Runs a whole exchange; returns the server's verdict.
    fn exchange(
        hash: ScramHash,
        creds: Option<&Credentials>,
        user: &str,
        password: &str,
    ) -> Result<(), ScramError> {
        let (mut client, c1) = ScramClient::new(hash, user, password)?;
        let (server, _, _) = ScramServer::start(hash, &c1)?;
        let (server, s1) = server.server_first(creds.map(|c| c.keys(hash)), TEST_ITERS)?;
        let c2 = client.handle_server_first(&s1)?;
        let s2 = server.finish(&c2)?;
        client.verify_server_final(&s2)
    }

    // Low iteration counts keep the tests fast; the arithmetic is the same.
    const TEST_ITERS: u32 = 64;

    #[test]
    fn client_and_server_agree_for_both_hashes() {
        let creds = Credentials::from_password("correct horse", TEST_ITERS).unwrap();
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            exchange(h, Some(&creds), "juliet", "correct horse").unwrap();
        }
    }

    #[test]
    fn a_wrong_password_is_not_authorized() {
        let creds = Credentials::from_password("correct horse", TEST_ITERS).unwrap();
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            let err = exchange(h, Some(&creds), "juliet", "battery staple").unwrap_err();
            assert!(matches!(err, ScramError::InvalidProof), "{err:?}");
            assert_eq!(err.sasl_condition(), "not-authorized");
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let err = exchange(ScramHash::Sha256, None, "nobody", "whatever").unwrap_err();
        assert!(matches!(err, ScramError::InvalidProof), "{err:?}");
    }

    #[test]
    fn an_unknown_users_fake_salt_is_stable_per_name_and_plausible() {
        let first = |user: &str, h| {
            let (_, c1) = ScramClient::new(h, user, "pw").unwrap();
            let (server, _, _) = ScramServer::start(h, &c1).unwrap();
            let (_, s1) = server.server_first(None, 10_000).unwrap();
            let s1 = String::from_utf8(s1).unwrap();
            // Drop the nonce, which is fresh every time.
            s1.split_once(',').unwrap().1.to_owned()
        };
        let a = first("nobody", ScramHash::Sha256);
        assert_eq!(a, first("nobody", ScramHash::Sha256));
        assert_ne!(a, first("somebody", ScramHash::Sha256));
        assert_ne!(a, first("nobody", ScramHash::Sha1));
        assert!(a.ends_with(",i=10000"), "{a}");
        let salt = a.strip_prefix("s=").unwrap().split(',').next().unwrap();
        assert_eq!(B64.decode(salt).unwrap().len(), SALT_LEN);
    }

    #[test]
    fn plain_for_an_unknown_user_runs_the_same_derivation_as_for_a_known_one() {
        let creds = Credentials::from_password("pencil", TEST_ITERS).unwrap();
        derivations::take();
        assert!(!verify_plain(Some(&creds), "alice", "wrong", TEST_ITERS).unwrap());
        let known = derivations::take();
        assert!(!verify_plain(None, "mallory", "wrong", TEST_ITERS).unwrap());
        let unknown = derivations::take();
        assert_eq!(known, (1, u64::from(TEST_ITERS)));
        assert_eq!(
            unknown, known,
            "an unknown user must cost what a known one does"
        );
        // The right password of a known user, for contrast.
        assert!(verify_plain(Some(&creds), "alice", "pencil", TEST_ITERS).unwrap());
        assert_eq!(derivations::take(), known);
    }

    #[test]
    fn an_unknown_users_fake_keys_are_deterministic_and_use_the_configured_count() {
        let a = fake_keys(ScramHash::Sha256, "nobody", 12_345).unwrap();
        assert_eq!(a, fake_keys(ScramHash::Sha256, "nobody", 12_345).unwrap());
        assert_eq!(a.iterations, 12_345);
        assert_eq!(a.stored_key.len(), 32);
        let b = fake_keys(ScramHash::Sha256, "nobody2", 12_345).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert_eq!(
            fake_keys(ScramHash::Sha1, "nobody", 1).unwrap().salt.len(),
            SALT_LEN
        );
    }

    #[test]
    fn without_random_bytes_no_credentials_salts_or_nonces_are_made() {
        crate::random::failing::with(|| {
            let e = Credentials::from_password("pencil", TEST_ITERS).unwrap_err();
            assert!(matches!(e, ScramError::Random(_)), "{e:?}");
            let e = ScramServer::start(ScramHash::Sha256, b"n,,n=user,r=abc").unwrap_err();
            assert_eq!(e.sasl_condition(), "temporary-auth-failure");
            assert!(ScramClient::new(ScramHash::Sha1, "user", "pencil").is_err());
        });
    }

    #[test]
    fn plain_passwords_are_verified_against_the_stored_keys() {
        let creds = Credentials::from_password("pencil", TEST_ITERS).unwrap();
        assert!(creds.verify_plain("pencil"));
        assert!(!creds.verify_plain("pencil "));
        assert!(!creds.verify_plain(""));
        assert_ne!(creds.sha1.salt, creds.sha256.salt);
        assert_eq!(creds.sha1.salt.len(), SALT_LEN);
    }

    #[test]
    fn passwords_are_saslprepped() {
        // U+00A0 (no-break space) maps to a space under SASLprep.
        let creds = Credentials::from_password("a\u{a0}b", TEST_ITERS).unwrap();
        assert!(creds.verify_plain("a b"));
        exchange(ScramHash::Sha1, Some(&creds), "u", "a b").unwrap();
        assert!(matches!(
            Credentials::from_password("", TEST_ITERS),
            Err(ScramError::Saslprep)
        ));
        assert!(matches!(
            Credentials::from_password("bad\u{7}", TEST_ITERS),
            Err(ScramError::Saslprep)
        ));
    }

    #[test]
    fn usernames_with_comma_and_equals_are_escaped_and_decoded() {
        let (_, c1) = ScramClient::with_nonce(ScramHash::Sha1, "a,b=c", "pw", "abc").unwrap();
        assert_eq!(c1, b("n,,n=a=2Cb=3Dc,r=abc"));
        let (_, user, _) = ScramServer::start(ScramHash::Sha1, &c1).unwrap();
        assert_eq!(user, "a,b=c");
        let creds = Credentials::from_password("pw", TEST_ITERS).unwrap();
        exchange(ScramHash::Sha256, Some(&creds), "a,b=c", "pw").unwrap();
    }

    #[test]
    fn authzid_and_the_y_flag_are_accepted() {
        let (_, user, authz) =
            ScramServer::start(ScramHash::Sha1, b"y,a=admin=2Cx@example.org,n=user,r=abc").unwrap();
        assert_eq!(user, "user");
        assert_eq!(authz.as_deref(), Some("admin,x@example.org"));
    }

    #[test]
    fn the_gs2_header_must_come_back_in_c() {
        // A client that sent `y,,` must echo `eSws` (base64 of "y,,"), not `biws`.
        let keys = ScramKeys::derive(ScramHash::Sha1, "pencil", b"salt", 16).unwrap();
        let (server, _, _) =
            ScramServer::start_with_nonce(ScramHash::Sha1, b"y,,n=user,r=abc", "def").unwrap();
        let (server, _) = server.server_first(Some(&keys), TEST_ITERS).unwrap();
        let err = server
            .finish(b"c=biws,r=abcdef,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err();
        assert!(matches!(err, ScramError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn channel_binding_is_refused_clearly() {
        let err =
            ScramServer::start(ScramHash::Sha256, b"p=tls-exporter,,n=user,r=abc").unwrap_err();
        assert!(matches!(err, ScramError::ChannelBindingUnsupported));
        assert_eq!(err.sasl_condition(), "malformed-request");
    }

    #[test]
    fn malformed_client_first_messages_are_refused() {
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=user",
            b"n,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,b=x,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=\xff,r=abc",
            // Escapes other than =2C and =3D, and a dangling `=`.
            b"n,,n=a=2Db,r=abc",
            b"n,,n=ab=,r=abc",
            b"n,,n=ab=2,r=abc",
            b"n,,n=a=2cb,r=abc",
            b"y,a=x=,n=user,r=abc",
        ] {
            let r = ScramServer::start(ScramHash::Sha1, bad);
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
            assert_eq!(r.err().unwrap().sasl_condition(), "malformed-request");
        }
    }

    #[test]
    fn a_client_nonce_longer_than_the_limit_is_malformed() {
        let at_limit = format!("n,,n=user,r={}", "x".repeat(MAX_NONCE_LEN));
        assert!(ScramServer::start(ScramHash::Sha256, at_limit.as_bytes()).is_ok());
        let huge = format!("n,,n=user,r={}", "x".repeat(8 * 1024));
        let e = ScramServer::start(ScramHash::Sha256, huge.as_bytes()).unwrap_err();
        assert_eq!(e.sasl_condition(), "malformed-request");
    }

    fn server_after_first() -> (ScramServerFinal, Vec<u8>) {
        let keys = ScramKeys::derive(ScramHash::Sha1, "pencil", b"salt", 16).unwrap();
        let (server, _, _) =
            ScramServer::start_with_nonce(ScramHash::Sha1, b"n,,n=user,r=abc", "def").unwrap();
        server.server_first(Some(&keys), TEST_ITERS).unwrap()
    }

    #[test]
    fn malformed_client_final_messages_are_refused() {
        let proof = B64.encode([0u8; 20]);
        for bad in [
            String::new(),
            "c=biws,r=abcdef".to_owned(),
            format!("c=biws,p={proof}"),
            format!("r=abcdef,c=biws,p={proof}"),
            format!("c=bi!s,r=abcdef,p={proof}"),
            "c=biws,r=abcdef,p=not*base64".to_owned(),
            format!("c=biws,r=abcdeX,p={proof}"),
            format!("c=biws,r=abc,p={proof}"),
            format!("c=biws,r=abcdef,p={}", B64.encode([0u8; 19])),
            format!("c=biws,r=abcdef,m=x,p={proof}"),
        ] {
            let (server, _) = server_after_first();
            let err = server.finish(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, ScramError::Malformed(_)), "{bad:?}: {err:?}");
        }
        // Well-formed but wrong.
        let (server, _) = server_after_first();
        let err = server
            .finish(format!("c=biws,r=abcdef,p={proof}").as_bytes())
            .unwrap_err();
        assert!(matches!(err, ScramError::InvalidProof));
    }

    fn client() -> ScramClient {
        ScramClient::with_nonce(ScramHash::Sha1, "user", "pencil", "abc")
            .unwrap()
            .0
    }

    #[test]
    fn the_client_refuses_bad_server_first_messages() {
        for bad in [
            "",
            "r=abcdef,s=c2FsdA==",
            "r=xyzdef,s=c2FsdA==,i=16",
            "r=abc,s=c2FsdA==,i=16",
            "r=abcdef,s=c2F*dA==,i=16",
            "r=abcdef,s=,i=16",
            "r=abcdef,s=c2FsdA==,i=0",
            "r=abcdef,s=c2FsdA==,i=-1",
            "r=abcdef,s=c2FsdA==,i=x",
            "m=1,r=abcdef,s=c2FsdA==,i=16",
        ] {
            let err = client().handle_server_first(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, ScramError::Malformed(_)), "{bad:?}: {err:?}");
        }
        let err = client()
            .handle_server_first(b"r=abcdef,s=c2FsdA==,i=4294967295")
            .unwrap_err();
        assert!(matches!(err, ScramError::TooManyIterations(4294967295)));
    }

    #[test]
    fn the_client_checks_the_server_signature() {
        let mut c = client();
        assert!(matches!(
            c.verify_server_final(b"v=AAAA"),
            Err(ScramError::OutOfOrder)
        ));
        c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16").unwrap();
        let wrong = format!("v={}", B64.encode([0u8; 20]));
        assert!(matches!(
            c.verify_server_final(wrong.as_bytes()),
            Err(ScramError::BadServerSignature)
        ));
        assert!(matches!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError(e)) if e == "invalid-proof"
        ));
        assert!(matches!(
            c.verify_server_final(b"x=1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16"),
            Err(ScramError::OutOfOrder)
        ));
    }

    #[test]
    fn mechanism_names_round_trip() {
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            assert_eq!(ScramHash::from_mechanism(h.mechanism_name()), Some(h));
        }
        assert_eq!(ScramHash::from_mechanism("SCRAM-SHA-1-PLUS"), None);
        assert_eq!(ScramHash::from_mechanism("scram-sha-1"), None);
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let creds = Credentials::from_password("pw", TEST_ITERS).unwrap();
        let dbg = format!("{creds:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&format!("{:?}", creds.sha1.server_key)));
    }
}
