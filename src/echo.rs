//! Echoing untrusted input in messages: bounded, with secrets redacted.
//!
//! Errors name what was wrong, and what was wrong is often the caller's own
//! input: a 60 KB URL, a thousand resume states. Echoed whole, such a
//! message outgrows gRPC's trailer limit and the real error is lost; a URL
//! with `user:password@` or a signed query puts a secret in the log. So
//! every message that leaves the daemon goes through [`bounded`], and every
//! URL echoed through [`redacted_url`].

/// The longest message the daemon sends or logs for one error.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The longest piece of one input echoed inside a message.
pub const MAX_ECHO_BYTES: usize = 256;

/// `text` cut to at most `max` bytes (at a character boundary), saying how
/// long it was.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let note = format!("… ({} bytes)", text.len());
    let mut cut = max.saturating_sub(note.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{note}", &text[..cut])
}

/// Query parameters that carry a credential (presigned S3, Azure SAS,
/// signed GCS URLs).
const SECRET_PARAMS: [&str; 6] = [
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "sig",
    "x-goog-signature",
    "signature",
];

/// `url` with any `user:password@` and the values of signing query
/// parameters replaced, then bounded to [`MAX_ECHO_BYTES`].
pub fn redacted_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            // A bare user name is often a token: all of it goes.
            out = format!("{}REDACTED{}", &out[..scheme_end + 3], &rest[at..]);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=REDACTED")
                }
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    bounded(&out, MAX_ECHO_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_and_says_how_long() {
        let long = "é".repeat(5000);
        let cut = bounded(&long, 100);
        assert!(cut.len() <= 100, "{}", cut.len());
        assert!(cut.ends_with("… (10000 bytes)"), "{cut}");
        assert_eq!(bounded("short", 100), "short");
    }

    #[test]
    fn passwords_and_signatures_are_redacted() {
        assert_eq!(
            redacted_url("http://user:secret@host:9000/b/x.tar"),
            "http://REDACTED@host:9000/b/x.tar"
        );
        assert_eq!(redacted_url("https://token@host/x.tar"), "https://REDACTED@host/x.tar");
        let signed =
            "https://b.s3.amazonaws.com/x.tar?X-Amz-Credential=AKIA&X-Amz-Signature=abc&x=1";
        assert_eq!(
            redacted_url(signed),
            "https://b.s3.amazonaws.com/x.tar?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1"
        );
        assert_eq!(redacted_url("s3://b/a@b.tar"), "s3://b/a@b.tar", "an @ in the key stays");
        assert!(redacted_url(&format!("s3://b/{}", "k".repeat(70_000))).len() <= MAX_ECHO_BYTES);
    }
}
