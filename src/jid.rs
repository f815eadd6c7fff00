//! JID parsing and normalisation (RFC 7622 addresses, prepared with the
//! RFC 6122 stringprep profiles, which agree with PRECIS on everything
//! real clients send).
//!
//! Routing compares bare JIDs as strings, so every JID is normalised once,
//! where it enters (stanza `to`/`from`, SASL authzid, config, CLI). ASCII —
//! almost every JID on the wire — takes a fast path with no allocation when
//! it is already lower-case.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("empty JID")]
    Empty,
    #[error("empty localpart")]
    EmptyLocal,
    #[error("empty domainpart")]
    EmptyDomain,
    #[error("empty resourcepart")]
    EmptyResource,
    #[error("localpart, domainpart or resourcepart longer than 1023 bytes")]
    TooLong,
    #[error("invalid character in localpart")]
    BadLocal,
    #[error("invalid domainpart")]
    BadDomain,
    #[error("invalid character in resourcepart")]
    BadResource,
}

const MAX_PART: usize = 1023;

/// A bare JID (`local@domain` or `domain`), normalised. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BareJid {
    s: Arc<str>,
    /// Byte offset of the domain in `s` (0 when there is no localpart).
    domain_at: u16,
}

/// A full JID (`local@domain/resource` or `domain/resource`).
#[derive(Clone, PartialEq, Eq)]
pub struct FullJid {
    bare: BareJid,
    resource: Arc<str>,
}

/// Either form, as found in a `to` or `from` attribute.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Jid {
    Bare(BareJid),
    Full(FullJid),
}

impl Hash for BareJid {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.s.hash(state)
    }
}

impl Hash for FullJid {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bare.hash(state);
        self.resource.hash(state);
    }
}

fn prep_local(local: &str) -> Result<Cow<'_, str>, JidError> {
    if local.is_empty() {
        return Err(JidError::EmptyLocal);
    }
    let out = if local.is_ascii() {
        if local.bytes().any(|b| {
            b <= 0x20
                || matches!(
                    b,
                    b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@' | 0x7f
                )
        }) {
            return Err(JidError::BadLocal);
        }
        if local.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(local.to_ascii_lowercase())
        } else {
            Cow::Borrowed(local)
        }
    } else {
        let p = to_fixed_point(local, stringprep::nodeprep).ok_or(JidError::BadLocal)?;
        // Some characters map to nothing (U+FE02): "\u{fe02}@c" is not "@c".
        if p.is_empty() {
            return Err(JidError::EmptyLocal);
        }
        Cow::Owned(p.into_owned())
    };
    if out.len() > MAX_PART {
        return Err(JidError::TooLong);
    }
    Ok(out)
}

/// Applies a stringprep profile until its output no longer changes.
/// Stringprep case-folds before NFKC, and NFKC can make what folding
/// would map again: nameprep turns U+03F9 into U+03C2 (final sigma),
/// which a second pass folds to U+03C3. A JID must normalise to a fixed
/// point (found by fuzz/jid), so the profile runs again, a few times at
/// most; what does not settle is refused.
fn to_fixed_point<'a, E>(
    s: &'a str,
    profile: impl Fn(&str) -> Result<Cow<'_, str>, E>,
) -> Option<Cow<'a, str>> {
    let mut cur: Cow<'a, str> = match profile(s).ok()? {
        Cow::Borrowed(b) if b.len() == s.len() => Cow::Borrowed(s),
        other => Cow::Owned(other.into_owned()),
    };
    for _ in 0..4 {
        let next = profile(&cur).ok()?;
        if next == cur {
            return Some(cur);
        }
        cur = Cow::Owned(next.into_owned());
    }
    None
}

fn prep_domain(domain: &str) -> Result<Cow<'_, str>, JidError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    let out = if domain.is_ascii() {
        // An IPv6 literal in brackets is allowed; otherwise letters, digits,
        // hyphens, dots (and underscores, seen in the wild on internal hosts).
        let ok = if domain.starts_with('[') {
            domain.ends_with(']')
                && domain[1..domain.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()
        } else {
            domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        };
        if !ok {
            return Err(JidError::BadDomain);
        }
        if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        }
    } else {
        let p = to_fixed_point(domain, stringprep::nameprep).ok_or(JidError::BadDomain)?;
        // Nameprep maps fullwidth letters and dots to ASCII ones, so what
        // it yields must pass the checks an ASCII domain passes: else
        // `ｗ｀．ｏｒｇ` became the domain "w`.org", and the normalised
        // JID would not parse again (found by fuzz/jid).
        if p.is_ascii() {
            return prep_domain(&p).map(|d| Cow::Owned(d.into_owned()));
        }
        let labels_ok = p.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !labels_ok || p.chars().any(char::is_whitespace) {
            return Err(JidError::BadDomain);
        }
        Cow::Owned(p.into_owned())
    };
    if out.len() > MAX_PART {
        return Err(JidError::TooLong);
    }
    Ok(out)
}

fn prep_resource(res: &str) -> Result<Cow<'_, str>, JidError> {
    if res.is_empty() {
        return Err(JidError::EmptyResource);
    }
    let out = if res.is_ascii() {
        if res.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(JidError::BadResource);
        }
        Cow::Borrowed(res)
    } else {
        let p = to_fixed_point(res, stringprep::resourceprep).ok_or(JidError::BadResource)?;
        if p.is_empty() {
            return Err(JidError::EmptyResource);
        }
        Cow::Owned(p.into_owned())
    };
    if out.len() > MAX_PART {
        return Err(JidError::TooLong);
    }
    Ok(out)
}

impl BareJid {
    /// Parses and normalises a bare JID; a resource is an error.
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        match Jid::parse(s)? {
            Jid::Bare(b) => Ok(b),
            Jid::Full(_) => Err(JidError::BadResource),
        }
    }

    /// Builds from already separate parts (normalising them).
    pub fn from_parts(local: Option<&str>, domain: &str) -> Result<BareJid, JidError> {
        let domain = prep_domain(domain)?;
        match local {
            None => Ok(BareJid {
                s: Arc::from(domain.as_ref()),
                domain_at: 0,
            }),
            Some(l) => {
                let l = prep_local(l)?;
                let mut s = String::with_capacity(l.len() + 1 + domain.len());
                s.push_str(&l);
                s.push('@');
                s.push_str(&domain);
                Ok(BareJid {
                    domain_at: (l.len() + 1) as u16,
                    s: Arc::from(s),
                })
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn local(&self) -> Option<&str> {
        if self.domain_at == 0 {
            None
        } else {
            Some(&self.s[..self.domain_at as usize - 1])
        }
    }

    pub fn domain(&self) -> &str {
        &self.s[self.domain_at as usize..]
    }

    /// True for a server JID (no localpart).
    pub fn is_domain(&self) -> bool {
        self.domain_at == 0
    }

    pub fn with_resource(&self, resource: &str) -> Result<FullJid, JidError> {
        let r = prep_resource(resource)?;
        Ok(FullJid {
            bare: self.clone(),
            resource: Arc::from(r.as_ref()),
        })
    }
}

impl FullJid {
    pub fn parse(s: &str) -> Result<FullJid, JidError> {
        match Jid::parse(s)? {
            Jid::Full(f) => Ok(f),
            Jid::Bare(_) => Err(JidError::EmptyResource),
        }
    }

    pub fn bare(&self) -> &BareJid {
        &self.bare
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn domain(&self) -> &str {
        self.bare.domain()
    }
}

impl Jid {
    /// Parses `[local@]domain[/resource]` and normalises every part.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        if s.is_empty() {
            return Err(JidError::Empty);
        }
        // The resource starts at the first '/', and may itself contain '@' and '/'.
        let (addr, resource) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (local, domain) = match addr.find('@') {
            Some(i) => (Some(&addr[..i]), &addr[i + 1..]),
            None => (None, addr),
        };
        let bare = BareJid::from_parts(local, domain)?;
        match resource {
            None => Ok(Jid::Bare(bare)),
            Some(r) => Ok(Jid::Full(bare.with_resource(r)?)),
        }
    }

    pub fn bare(&self) -> &BareJid {
        match self {
            Jid::Bare(b) => b,
            Jid::Full(f) => &f.bare,
        }
    }

    pub fn domain(&self) -> &str {
        self.bare().domain()
    }

    pub fn resource(&self) -> Option<&str> {
        match self {
            Jid::Bare(_) => None,
            Jid::Full(f) => Some(&f.resource),
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, Jid::Full(_))
    }
}

impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}

impl fmt::Debug for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BareJid({})", self.s)
    }
}

impl fmt::Display for FullJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bare, self.resource)
    }
}

impl fmt::Debug for FullJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FullJid({self})")
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jid::Bare(b) => b.fmt(f),
            Jid::Full(j) => j.fmt(f),
        }
    }
}

impl From<BareJid> for Jid {
    fn from(b: BareJid) -> Jid {
        Jid::Bare(b)
    }
}

impl From<FullJid> for Jid {
    fn from(f: FullJid) -> Jid {
        Jid::Full(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_jids_are_lowercased_except_the_resource() {
        let j = Jid::parse("Juliet@Capulet.Example/Balcony").unwrap();
        assert_eq!(j.to_string(), "juliet@capulet.example/Balcony");
        assert_eq!(j.bare().local(), Some("juliet"));
        assert_eq!(j.domain(), "capulet.example");
    }

    #[test]
    fn resource_may_contain_slash_and_at() {
        let j = FullJid::parse("a@b/c@d/e").unwrap();
        assert_eq!(j.resource(), "c@d/e");
        assert_eq!(j.bare().as_str(), "a@b");
    }

    #[test]
    fn domain_only_jids_have_no_local() {
        let j = BareJid::parse("Example.ORG.").unwrap();
        assert!(j.is_domain());
        assert_eq!(j.as_str(), "example.org");
        assert_eq!(j.local(), None);
    }

    #[test]
    fn non_ascii_parts_are_stringprepped() {
        let j = BareJid::parse("ÄLICE@Exämple.org").unwrap();
        assert_eq!(j.as_str(), "älice@exämple.org");
    }

    /// Reproducers from fuzz/corpus/jid: fullwidth forms nameprep turns
    /// into ASCII.
    #[test]
    fn a_domain_that_nameprep_makes_ascii_is_checked_as_ascii() {
        let j = Jid::parse("ｆｕｌｌ@ｗｉｄｔｈ．ｏｒｇ").unwrap();
        assert_eq!(j.to_string(), "full@width.org");
        assert_eq!(Jid::parse(&j.to_string()).unwrap(), j);
        assert_eq!(Jid::parse("ａ．").unwrap().to_string(), "a");
        assert_eq!(Jid::parse("［::1］").unwrap().to_string(), "[::1]");
        for bad in [
            "ｆｕｌｌ@ｗｉｄｔ｀．ｏｒｇ",
            "ａ．．ｂ",
            "ａ．．",
            "é．．org",
            "é`.org",
        ] {
            assert_eq!(Jid::parse(bad), Err(JidError::BadDomain), "{bad}");
        }
    }

    /// Reproducer from fuzz/corpus/jid: a part that stringprep maps to
    /// nothing is an empty part, not a shorter JID.
    #[test]
    fn a_part_that_stringprep_maps_to_nothing_is_empty() {
        assert_eq!(Jid::parse("\u{fe02}@c"), Err(JidError::EmptyLocal));
        assert_eq!(Jid::parse("a@c/\u{fe02}"), Err(JidError::EmptyResource));
        assert_eq!(Jid::parse("a@\u{fe02}"), Err(JidError::EmptyDomain));
    }

    /// Reproducer from fuzz/jid: nameprep alone is not idempotent here
    /// (U+03F9 folds to U+03F2, which NFKC makes a final sigma that a
    /// second pass folds to U+03C3).
    #[test]
    fn a_domain_normalises_to_a_fixed_point_where_one_nameprep_pass_does_not() {
        let j = Jid::parse("J.pq\u{3f9}").unwrap();
        assert_eq!(j.to_string(), "j.pq\u{3c3}");
        assert_eq!(Jid::parse(&j.to_string()).unwrap(), j);
        let j = Jid::parse("\u{3f9}x@a.org/r").unwrap();
        assert_eq!(Jid::parse(&j.to_string()).unwrap(), j);
    }

    #[test]
    fn malformed_jids_are_refused() {
        for bad in [
            "", "@x", "a@", "a@b/", "a b@c", "a@b c", "a@b..c", "a<@b", "a@[zz]",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Jid::parse("a@[::1]").is_ok());
    }

    #[test]
    fn parts_of_1023_bytes_are_accepted_and_1024_refused_ascii_or_not() {
        let e = |n: usize| "\u{e9}".repeat(n);
        for (local, ok) in [
            ("a".repeat(1023), true),
            ("a".repeat(1024), false),
            (format!("{}a", e(511)), true),
            (e(512), false),
        ] {
            let jid = format!("{local}@example.org");
            match BareJid::parse(&jid) {
                Ok(j) => {
                    assert!(ok, "{} bytes accepted", local.len());
                    assert_eq!(j.local().map(str::len), Some(1023));
                }
                Err(err) => {
                    assert!(!ok, "{} bytes refused: {err}", local.len());
                    assert_eq!(err, JidError::TooLong);
                }
            }
            let full = format!("a@example.org/{local}");
            assert_eq!(
                FullJid::parse(&full).is_ok(),
                ok,
                "resource of {}",
                local.len()
            );
        }
    }

    #[test]
    fn nodeprep_prohibited_characters_and_bidi_violations_are_refused() {
        for (jid, err) in [
            // A no-break space (C.1.2) and a colon (RFC 3920 A.5) in the
            // localpart, on the non-ASCII path.
            ("a\u{a0}b@example.org", JidError::BadLocal),
            ("caf\u{e9}:x@example.org", JidError::BadLocal),
            // Right-to-left mixed with left-to-right (RFC 3454 §6, which
            // RFC 5893 keeps): Hebrew alef then a Latin letter.
            ("\u{5d0}a@example.org", JidError::BadLocal),
            ("a@example.org/\u{5d0}a", JidError::BadResource),
            // A right-to-left override (C.8) in the resource.
            ("a@example.org/x\u{202e}y", JidError::BadResource),
        ] {
            assert_eq!(Jid::parse(jid), Err(err), "{jid:?}");
        }
        // Right-to-left only is fine.
        assert!(BareJid::parse("\u{5d0}\u{5d1}@example.org").is_ok());
    }
}
