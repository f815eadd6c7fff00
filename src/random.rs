//! The operating system's random generator, failing closed.
//!
//! Salts, nonces, stream ids, the dialback secret and generated resource
//! names all come from here. When the generator fails, the operation that
//! wanted the bytes is refused (a SASL `<temporary-auth-failure/>`, an
//! `<internal-server-error/>` stream error, a start-up error): nothing ever
//! continues with zeros, and nothing panics on network input. This module
//! owns only that rule; callers decide how to refuse and emit the event.

use aws_lc_rs::rand;

/// The system random number generator could not deliver bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomUnavailable;

/// Fills `buf` with random bytes, or says why it could not.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomUnavailable> {
    #[cfg(test)]
    if failing::is_on() {
        return Err(RandomUnavailable);
    }
    rand::fill(buf).map_err(|_| RandomUnavailable)
}

/// `n` random bytes.
pub fn bytes(n: usize) -> Result<Vec<u8>, RandomUnavailable> {
    let mut v = vec![0u8; n];
    fill(&mut v)?;
    Ok(v)
}

/// `n` random bytes, hex-encoded (stream ids, resource names).
pub fn hex(n: usize) -> Result<String, RandomUnavailable> {
    Ok(hex::encode(bytes(n)?))
}

/// Unit tests make the generator fail on their own thread, to check that
/// each caller refuses rather than carrying on.
#[cfg(test)]
pub mod failing {
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
    }

    pub fn is_on() -> bool {
        ON.with(Cell::get)
    }

    /// Runs `f` with the generator failing on this thread.
    pub fn with<T>(f: impl FnOnce() -> T) -> T {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                ON.with(|c| c.set(false));
            }
        }
        ON.with(|c| c.set(true));
        let _reset = Reset;
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_between_calls() {
        assert_ne!(bytes(16).unwrap(), bytes(16).unwrap());
        assert_eq!(hex(8).unwrap().len(), 16);
    }

    #[test]
    fn a_failing_generator_is_an_error_not_zeros() {
        failing::with(|| {
            let mut b = [7u8; 4];
            assert_eq!(fill(&mut b), Err(RandomUnavailable));
            assert_eq!(bytes(4), Err(RandomUnavailable));
        });
        assert!(fill(&mut [0u8; 4]).is_ok(), "the switch is reset");
    }
}
