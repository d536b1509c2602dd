//! The API key: held in one type whose `Debug` never shows it, and scrubbed from any text that
//! could reach a log or an error (servers sometimes echo part of a bad key back).

use std::fmt;

/// An API key. `Debug` prints `ApiKey(<redacted>)`; there is no `Display`, so the key cannot
/// end up in a formatted message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Reads the key from the named environment variable; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| ApiKey(k.trim().to_string()))
    }

    /// The key itself, for the one place that needs it: the request header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Removes every occurrence of the key from `text`. Short keys are left to the caller's care:
/// scrubbing a 1-3 character "key" would mangle ordinary words.
pub(crate) fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    match key {
        Some(k) if k.0.len() >= 4 => text.replace(&k.0, "<redacted>"),
        _ => text.to_string(),
    }
}
