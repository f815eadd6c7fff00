//! The SCRAM credentials an account is stored as (RFC 5802 §3 StoredKey
//! and ServerKey, per hash): plain data that the store serialises. Deriving
//! and checking them is the SASL code's business (`stream::scram`, which
//! adds the methods), so this module must not import it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the store keeps per hash: never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

// The keys are not the password, but ServerKey lets whoever holds it
// impersonate this server to clients, so they stay out of logs.
impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("salt", &hex::encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Both hashes' keys for one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub sha1: ScramKeys,
    pub sha256: ScramKeys,
}
