//! The configuration loader on arbitrary UTF-8.
//!
//! Invariants: no panic; an error that has a column has a line, a line
//! lies within the text, and the error renders as `<config>[:line[:col]]:
//! [key: ]message`.
#![no_main]

use std::path::Path;

use fedrouter::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(e) = Config::from_toml_str(text, Some(Path::new("/etc/fedrouter/fuzz.toml"))) else {
        return;
    };
    assert!(
        e.column().is_none() || e.line().is_some(),
        "a column without a line: {e:?}"
    );
    if let Some(line) = e.line() {
        // TOML counts \n, \r\n and a final line without a newline.
        let lines = text.split('\n').count();
        assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e:?}");
        assert!(
            e.column().is_some_and(|c| c >= 1),
            "a line without a column: {e:?}"
        );
    }
    assert!(e.key().is_none_or(|k| !k.is_empty()), "an empty key: {e:?}");
    let shown = e.to_string();
    assert!(shown.starts_with("/etc/fedrouter/fuzz.toml"), "{shown}");
    if let Some(key) = e.key() {
        assert!(shown.contains(&format!(": {key}: ")), "{shown}");
    }
});
