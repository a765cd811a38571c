//! Brace expansion for shard patterns, as in webdataset and `bash`:
//! `shard-{000000..000511}.tar`, `{train,val}/part-{0..3}.tar`.
//!
//! Numeric ranges keep the zero padding of their wider bound; lists are
//! comma-separated; several groups multiply out left to right. Nested braces
//! are not supported (no shard naming scheme needs them) and are an error.

use super::SourceError;

/// The most names one pattern may expand to (as many as a prefix listing
/// may return): a typo such as `{0..99999999}` should be an error, not an
/// out-of-memory. A million shards is a LAION-5B-sized dataset several
/// times over; each costs ~150 bytes of shard list per session.
pub const MAX_EXPANSION: usize = 1_000_000;

/// One piece of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Choice(Vec<String>),
}

/// Whether `pattern` contains a brace group.
pub fn has_braces(pattern: &str) -> bool {
    pattern.contains('{') || pattern.contains('}')
}

/// Expands every brace group of `pattern`, in order.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, SourceError> {
    let pieces = parse(pattern)?;
    let mut total: usize = 1;
    for piece in &pieces {
        if let Piece::Choice(options) = piece {
            total = total.saturating_mul(options.len());
        }
    }
    if total > MAX_EXPANSION {
        return Err(bad(pattern, format!("expands to {total} names, more than {MAX_EXPANSION}")));
    }
    let mut out = vec![String::new()];
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.iter_mut().for_each(|s| s.push_str(&text)),
            Piece::Choice(options) => {
                let mut next = Vec::with_capacity(out.len() * options.len());
                for prefix in &out {
                    for option in &options {
                        next.push(format!("{prefix}{option}"));
                    }
                }
                out = next;
            }
        }
    }
    Ok(out)
}

fn bad(pattern: &str, reason: impl Into<String>) -> SourceError {
    SourceError::BadPattern { pattern: pattern.to_string(), reason: reason.into() }
}

fn parse(pattern: &str) -> Result<Vec<Piece>, SourceError> {
    let mut pieces = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Literal(rest.to_string()));
                break;
            }
            Some(at) if rest.as_bytes()[at] == b'}' => {
                return Err(bad(pattern, "'}' without a matching '{'"));
            }
            Some(open) => {
                if open > 0 {
                    pieces.push(Piece::Literal(rest[..open].to_string()));
                }
                let after = &rest[open + 1..];
                let close = after.find(['{', '}']).filter(|&i| after.as_bytes()[i] == b'}');
                let Some(close) = close else {
                    return Err(bad(
                        pattern,
                        "'{' without a matching '}' (nested braces are not supported)",
                    ));
                };
                pieces.push(Piece::Choice(group(pattern, &after[..close])?));
                rest = &after[close + 1..];
            }
        }
    }
    Ok(pieces)
}

/// Expands the inside of one `{...}` group.
fn group(pattern: &str, body: &str) -> Result<Vec<String>, SourceError> {
    if body.is_empty() {
        return Err(bad(pattern, "empty '{}' group"));
    }
    if let Some((lo, hi)) = body.split_once("..") {
        return range(pattern, lo, hi);
    }
    let options: Vec<String> = body.split(',').map(str::to_string).collect();
    if options.len() < 2 {
        return Err(bad(
            pattern,
            format!("'{{{body}}}' is neither a range 'a..b' nor a list 'a,b'"),
        ));
    }
    Ok(options)
}

fn range(pattern: &str, lo: &str, hi: &str) -> Result<Vec<String>, SourceError> {
    let parse = |s: &str| -> Result<u64, SourceError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(pattern, format!("range bound '{s}' is not a non-negative integer")));
        }
        s.parse::<u64>().map_err(|e| bad(pattern, format!("range bound '{s}': {e}")))
    };
    let (start, end) = (parse(lo)?, parse(hi)?);
    if start > end {
        return Err(bad(pattern, format!("range {lo}..{hi} runs backwards")));
    }
    let count = end - start + 1;
    if count > MAX_EXPANSION as u64 {
        return Err(bad(
            pattern,
            format!("range {lo}..{hi} has {count} values, more than {MAX_EXPANSION}"),
        ));
    }
    // Zero padding follows the bound written with a leading zero, as in
    // webdataset's braceexpand: {000..127} → 000, 001, …
    let padded = lo.len() > 1 && lo.starts_with('0') || hi.len() > 1 && hi.starts_with('0');
    let width = if padded { lo.len().max(hi.len()) } else { 0 };
    Ok((start..=end).map(|n| format!("{n:0width$}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_range() {
        let v = expand_braces("s-{000..003}.tar").unwrap();
        assert_eq!(v, ["s-000.tar", "s-001.tar", "s-002.tar", "s-003.tar"]);
    }

    #[test]
    fn unpadded_range_and_list_multiply() {
        let v = expand_braces("{a,b}/{8..10}").unwrap();
        assert_eq!(v, ["a/8", "a/9", "a/10", "b/8", "b/9", "b/10"]);
    }

    #[test]
    fn no_braces_is_identity() {
        assert_eq!(expand_braces("x.tar").unwrap(), ["x.tar"]);
    }

    #[test]
    fn malformed_patterns_are_named_errors() {
        for p in
            ["a{1..2", "a}1", "a{}", "a{1..x}", "a{5..1}", "a{x}", "a{{1..2}}", "{0..99999999999}"]
        {
            let err = expand_braces(p).unwrap_err();
            assert!(matches!(err, SourceError::BadPattern { .. }), "{p}: {err}");
            assert!(err.to_string().contains(p), "error names the pattern: {err}");
        }
    }
}
