//! Which dataset URLs a client may make the daemon read.
//!
//! The daemon reads with its own credentials and network position, so a
//! client that names a URL borrows both: without a policy, any process that
//! can reach the socket could make it fetch the cloud metadata service
//! (169.254.169.254: instance credentials) or read any `.tar` the daemon's
//! user can read. So:
//!
//! * With no `--allow-url`, object stores (`s3://`, `gs://`, `az://`) and
//!   `http(s)://` are allowed, except link-local and metadata hosts; local
//!   files are not.
//! * With `--allow-url PATTERN` (repeatable), a URL must match one: a
//!   pattern ending in `*` matches every URL it is a prefix of, any other
//!   must match whole (`s3://bucket/train/*`, `file:///data/*`, `*` for
//!   anything). Link-local and metadata hosts still need a pattern that
//!   names the host.
//! * A local path with a `..` component is refused whatever the patterns
//!   say (`file:///data/../etc` is not under `/data`).

use crate::source::{DatasetUrl, Scheme};

/// The daemon's URL policy.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    patterns: Vec<String>,
}

impl UrlPolicy {
    /// A policy from `--allow-url` patterns (none: the default above).
    pub fn new(patterns: Vec<String>) -> Result<UrlPolicy, String> {
        for p in &patterns {
            if p.is_empty() {
                return Err("--allow-url: an empty pattern (use '*' to allow every URL)".into());
            }
            if p.contains('*') && (!p.ends_with('*') || p.matches('*').count() > 1) {
                return Err(format!("--allow-url '{p}': '*' may only end a pattern"));
            }
        }
        Ok(UrlPolicy { patterns })
    }

    /// Whether `url` may be read; the error says why not and what to allow.
    pub fn check(&self, url: &DatasetUrl) -> Result<(), String> {
        let text = url.object_url(&url.key);
        let local = url.scheme == Scheme::File;
        if local && url.key.split('/').any(|segment| segment == "..") {
            return Err(format!("'{text}' has a '..' component: name the path without it"));
        }
        let sensitive = host_of(url).filter(|h| is_metadata_host(h));
        if self.patterns.is_empty() {
            if local {
                return Err(format!(
                    "this daemon does not read local files ('{text}'); its operator can allow them \
                     with --allow-url 'file:///path/*'"
                ));
            }
            if let Some(host) = sensitive {
                return Err(format!("'{host}' is a link-local or metadata address: refused"));
            }
            return Ok(());
        }
        let matched = self.patterns.iter().find(|p| match p.strip_suffix('*') {
            Some(prefix) => text.starts_with(prefix),
            None => text == **p,
        });
        match (matched, sensitive) {
            (None, _) => Err(format!(
                "'{text}' matches none of this daemon's --allow-url patterns ({})",
                self.patterns.join(", ")
            )),
            // A metadata host needs a pattern that names it.
            (Some(p), Some(host)) if !p.contains(host.as_str()) => Err(format!(
                "'{host}' is a link-local or metadata address: refused unless a --allow-url \
                 pattern names it"
            )),
            (Some(_), _) => Ok(()),
        }
    }
}

/// The host an `http(s)://` URL connects to (no user, no port).
fn host_of(url: &DatasetUrl) -> Option<String> {
    if !matches!(url.scheme, Scheme::Http | Scheme::Https) {
        return None;
    }
    let authority = url.authority.rsplit_once('@').map_or(url.authority.as_str(), |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    Some(host.to_ascii_lowercase())
}

/// Link-local addresses (where clouds serve instance metadata and
/// credentials) and the metadata services' names.
fn is_metadata_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if matches!(host, "metadata" | "metadata.google.internal" | "metadata.goog") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.is_link_local(),
        // fe80::/10, AWS's IPv6 metadata address fd00:ec2::254, and
        // 169.254/16 written as an IPv4-mapped IPv6 address.
        Ok(std::net::IpAddr::V6(v6)) => {
            let aws = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == aws
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &UrlPolicy, url: &str) -> Result<(), String> {
        policy.check(&DatasetUrl::parse(url).expect("url"))
    }

    #[test]
    fn by_default_stores_yes_local_files_and_metadata_no() {
        let p = UrlPolicy::default();
        assert!(check(&p, "s3://bucket/train/").is_ok());
        assert!(check(&p, "https://data.example.com/x.tar").is_ok());
        assert!(check(&p, "/data/x.tar").unwrap_err().contains("--allow-url"));
        for url in [
            "http://169.254.169.254/latest/meta-data/x.tar",
            "http://metadata.google.internal/computeMetadata/x.tar",
            "http://[fe80::1]:80/x.tar",
            "http://[fd00:ec2::254]/x.tar",
            "http://[::ffff:169.254.169.254]/x.tar",
            "http://user:pw@169.254.169.254:80/x.tar",
        ] {
            assert!(check(&p, url).unwrap_err().contains("metadata"), "{url}");
        }
    }

    #[test]
    fn patterns_allow_what_they_name_and_nothing_else() {
        let p = UrlPolicy::new(vec!["s3://train/*".into(), "file:///data/*".into()]).unwrap();
        assert!(check(&p, "s3://train/a/").is_ok());
        assert!(check(&p, "file:///data/s-{0..3}.tar").is_ok());
        assert!(check(&p, "s3://other/a/").is_err());
        assert!(check(&p, "file:///etc/x.tar").is_err());
        assert!(check(&p, "file:///data/../etc/x.tar").unwrap_err().contains(".."));
        let any = UrlPolicy::new(vec!["*".into()]).unwrap();
        assert!(check(&any, "http://169.254.169.254/x.tar").is_err(), "needs its name");
        let named = UrlPolicy::new(vec!["http://169.254.169.254/*".into()]).unwrap();
        assert!(check(&named, "http://169.254.169.254/x.tar").is_ok());
        assert!(UrlPolicy::new(vec!["s3://*/x".into()]).is_err());
    }
}
