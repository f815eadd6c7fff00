//! The Lync negotiation matrix (lync-xmpp-federation.md §7, L-NEG): what a
//! partner's TLS / SASL / dialback settings lead to, and whether Lync calls
//! the combination valid, worth a warning, or invalid.
//!
//! [`matrix`] is the documented table, row for row. [`check`] is what
//! fedrouter enforces (§11): the table, except that the two rows where TLS
//! is not supported but SASL is still asked for (Required or Optional, with
//! dialback on) are refused rather than warned about. The documentation
//! contradicts itself there — L-NEG lists them as "TCP dialback" with a
//! warning, while the Control Panel refuses to save them ("SASL must have
//! TLS support") — and §11 takes the Control Panel's side: SASL is never
//! sent without TLS, so asking for it without TLS is a mistake.

use super::Negotiate;

/// Lync's judgement of one combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Accepted; the text says what is wrong with it.
    Warning(&'static str),
    /// Refused; the text is the rule it breaks.
    Invalid(&'static str),
}

/// One row of the negotiation matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixRow {
    /// The expected authentication method (the table's "Mode" column);
    /// [`NO_MODE`] for the invalid rows.
    pub mode: &'static str,
    pub verdict: Verdict,
}

/// The "Mode" of an invalid row (the table's "—"): nothing can authenticate.
pub const NO_MODE: &str = "none";

/// The rule behind the Control Panel's refusal, in its words.
pub const SASL_NEEDS_TLS: &str = "SASL must have TLS support";
/// The rule behind the last row of the table, in Lync's words.
pub const SASL_OR_DIALBACK: &str = "SASL or Dialback must be enabled";

const SASL_TLS: &str = "SASL over TLS";
const ALL_THREE: &str = "SASL/TLS, TLS dialback, TCP dialback";
const TCP_DIALBACK: &str = "TCP dialback";

/// The §7 matrix, exactly as documented (L-NEG). Every one of the 18
/// combinations has a row; "any / NotSupported / False" covers three.
/// The warning texts of rows the table leaves bare ("Warning") say what
/// the combination risks.
pub fn matrix(tls: Negotiate, sasl: Negotiate, dialback: bool) -> MatrixRow {
    use Negotiate::{NotSupported as N, Optional as O, Required as R};
    use Verdict::{Invalid, Ok, Warning};
    let (mode, verdict) = match (tls, sasl, dialback) {
        (R, R, true) => (
            SASL_TLS,
            Warning("dialback is never used when TLS and SASL are both required"),
        ),
        (R, R, false) => (SASL_TLS, Ok),
        (O, R, true) => (ALL_THREE, Warning("optional TLS may break SASL")),
        (O, R, false) => (
            SASL_TLS,
            Warning("optional TLS may break SASL, and without dialback there is no fallback"),
        ),
        (N, R, true) | (N, O, true) => (
            TCP_DIALBACK,
            Warning("SASL is never used without TLS; only TCP dialback can authenticate"),
        ),
        (N, R, false) | (N, O, false) => (NO_MODE, Invalid(SASL_NEEDS_TLS)),
        (R, O, true) => ("SASL/TLS, TLS dialback", Ok),
        (R, O, false) => (SASL_TLS, Ok),
        (O, O, true) => (
            ALL_THREE,
            Warning("optional TLS lets a peer fall back to unencrypted TCP dialback"),
        ),
        (O, O, false) => (
            SASL_TLS,
            Warning("optional TLS may break SASL, and without dialback there is no fallback"),
        ),
        (R, N, true) => ("TLS dialback", Ok),
        (O, N, true) => ("TLS dialback or TCP dialback, depending on the peer", Ok),
        (N, N, true) => (TCP_DIALBACK, Ok),
        (_, N, false) => (NO_MODE, Invalid(SASL_OR_DIALBACK)),
    };
    MatrixRow { mode, verdict }
}

/// What fedrouter accepts (§11): [`matrix`], but SASL asked for without
/// TLS is always refused ([`SASL_NEEDS_TLS`]), dialback or not.
pub fn check(tls: Negotiate, sasl: Negotiate, dialback: bool) -> Verdict {
    if tls == Negotiate::NotSupported && sasl != Negotiate::NotSupported {
        return Verdict::Invalid(SASL_NEEDS_TLS);
    }
    matrix(tls, sasl, dialback).verdict
}

/// The configuration spelling of a [`Negotiate`] value.
pub fn negotiate_name(n: Negotiate) -> &'static str {
    match n {
        Negotiate::Required => "required",
        Negotiate::Optional => "optional",
        Negotiate::NotSupported => "not_supported",
    }
}

/// `tls_negotiation = "optional", sasl_negotiation = "required",
/// support_dialback_negotiation = true`: a combination as the operator
/// wrote it.
pub fn describe(tls: Negotiate, sasl: Negotiate, dialback: bool) -> String {
    format!(
        "tls_negotiation = \"{}\", sasl_negotiation = \"{}\", support_dialback_negotiation = {dialback}",
        negotiate_name(tls),
        negotiate_name(sasl)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Negotiate::{NotSupported as N, Optional as O, Required as R};

    /// The §7 table transcribed: (tls, sasl, dialback, mode, verdict kind).
    /// 'o' ok, 'w' warning, 'x' invalid.
    const TABLE: [(Negotiate, Negotiate, bool, &str, char); 18] = [
        (R, R, true, "SASL over TLS", 'w'),
        (R, R, false, "SASL over TLS", 'o'),
        (O, R, true, "SASL/TLS, TLS dialback, TCP dialback", 'w'),
        (O, R, false, "SASL over TLS", 'w'),
        (N, R, true, "TCP dialback", 'w'),
        (N, R, false, "none", 'x'),
        (R, O, true, "SASL/TLS, TLS dialback", 'o'),
        (R, O, false, "SASL over TLS", 'o'),
        (O, O, true, "SASL/TLS, TLS dialback, TCP dialback", 'w'),
        (O, O, false, "SASL over TLS", 'w'),
        (N, O, true, "TCP dialback", 'w'),
        (N, O, false, "none", 'x'),
        (R, N, true, "TLS dialback", 'o'),
        (
            O,
            N,
            true,
            "TLS dialback or TCP dialback, depending on the peer",
            'o',
        ),
        (N, N, true, "TCP dialback", 'o'),
        (R, N, false, "none", 'x'),
        (O, N, false, "none", 'x'),
        (N, N, false, "none", 'x'),
    ];

    fn kind(v: Verdict) -> char {
        match v {
            Verdict::Ok => 'o',
            Verdict::Warning(_) => 'w',
            Verdict::Invalid(_) => 'x',
        }
    }

    #[test]
    fn the_matrix_is_the_documented_table_row_for_row() {
        let mut seen = std::collections::HashSet::new();
        for (tls, sasl, dialback, mode, verdict) in TABLE {
            assert!(seen.insert((tls as u8, sasl as u8, dialback)), "row twice");
            let row = matrix(tls, sasl, dialback);
            let at = describe(tls, sasl, dialback);
            assert_eq!(row.mode, mode, "{at}");
            assert_eq!(kind(row.verdict), verdict, "{at}");
            if let Verdict::Warning(text) | Verdict::Invalid(text) = row.verdict {
                assert!(!text.is_empty(), "{at}");
            }
        }
        assert_eq!(seen.len(), 18, "every combination is covered");
    }

    #[test]
    fn the_invalid_rows_name_the_lync_rule() {
        for (tls, sasl) in [(N, R), (N, O)] {
            assert_eq!(
                matrix(tls, sasl, false).verdict,
                Verdict::Invalid(SASL_NEEDS_TLS)
            );
        }
        for tls in [R, O, N] {
            assert_eq!(
                matrix(tls, N, false).verdict,
                Verdict::Invalid(SASL_OR_DIALBACK)
            );
        }
    }

    #[test]
    fn check_refuses_sasl_without_tls_even_with_dialback() {
        for sasl in [R, O] {
            for dialback in [true, false] {
                assert_eq!(
                    check(N, sasl, dialback),
                    Verdict::Invalid(SASL_NEEDS_TLS),
                    "{}",
                    describe(N, sasl, dialback)
                );
            }
        }
    }

    #[test]
    fn check_agrees_with_the_matrix_everywhere_else() {
        for (tls, sasl, dialback, _, _) in TABLE {
            if tls == N && sasl != N {
                continue;
            }
            assert_eq!(
                check(tls, sasl, dialback),
                matrix(tls, sasl, dialback).verdict
            );
        }
    }

    #[test]
    fn describe_uses_the_configuration_spelling() {
        assert_eq!(
            describe(N, O, true),
            "tls_negotiation = \"not_supported\", sasl_negotiation = \"optional\", \
             support_dialback_negotiation = true"
        );
    }
}
