//! Hiding credentials before a URL is printed or logged.

/// Replaces the password of `scheme://user:password@host/...` with `***`; other URLs are
/// returned unchanged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://careflow:s3cret@db:5432/x"),
            "postgres://careflow:***@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://careflow@db/x"),
            "postgres://careflow@db/x"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
