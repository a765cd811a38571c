//! A dataset URL, split into the store it names and the key or pattern inside.
//!
//! ```text
//!   s3://bucket/train/shard-{000000..000511}.tar
//!   └┬┘  └─┬──┘ └──────────────┬──────────────┘
//!  scheme authority           key (raw: braces are expanded later)
//! ```
//!
//! Keys are kept raw, not percent-decoded: object keys may contain any byte
//! sequence and `{`/`}` must survive until brace expansion.

use super::SourceError;
use crate::echo::redacted_url;

/// The longest dataset URL accepted (brace patterns included). Far above
/// any real one; well below what breaks a request signer (64 KB panicked).
pub const MAX_URL_BYTES: usize = 8192;

/// The longest object key: S3's, GCS's and Azure's limit (local paths:
/// 4096, the usual `PATH_MAX`).
pub const MAX_KEY_BYTES: usize = 1024;

/// Which kind of object store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    S3,
    Gcs,
    Azure,
    Http,
    Https,
    File,
    Memory,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::File => "file",
            Scheme::Memory => "memory",
        }
    }
}

/// A parsed dataset URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetUrl {
    pub scheme: Scheme,
    /// Bucket, container, host, or memory store name; empty for files.
    pub authority: String,
    /// The object key, prefix or brace pattern, without a leading `/`.
    pub key: String,
}

impl DatasetUrl {
    /// Parses `s3://`, `s3a://`, `gs://`, `az://`, `azure://`, `abfs(s)://`,
    /// `http(s)://`, `file://`, `memory://` URLs and plain local paths.
    pub fn parse(url: &str) -> Result<DatasetUrl, SourceError> {
        let bad = |reason: &str| SourceError::BadUrl {
            url: redacted_url(url),
            reason: reason.to_string(),
        };
        if url.trim().is_empty() {
            return Err(bad("the URL is empty"));
        }
        if url.len() > MAX_URL_BYTES {
            return Err(bad(&format!("{} bytes, more than {MAX_URL_BYTES}", url.len())));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.contains(':') && !url.starts_with('/') && !url.starts_with('.') {
                return Err(bad(
                    "expected SCHEME://..., e.g. s3://bucket/prefix/ (or a local path)",
                ));
            }
            return Self::local(url).map_err(|e| bad(&e));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" | "gcs" => Scheme::Gcs,
            "az" | "azure" | "abfs" | "abfss" => Scheme::Azure,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "file" => Scheme::File,
            "memory" => Scheme::Memory,
            other => {
                return Err(bad(&format!(
                    "unknown scheme '{other}': use s3, gs, az, http(s), file or memory"
                )));
            }
        };
        if scheme == Scheme::File {
            if !rest.starts_with('/') {
                return Err(bad("file URLs are absolute: file:///path/to/shards/"));
            }
            return Self::local(rest).map_err(|e| bad(&e));
        }
        let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(bad("the bucket (or host) is missing: s3://BUCKET/prefix/"));
        }
        if authority.contains(['{', '}']) {
            return Err(bad("brace patterns belong in the key, not the bucket"));
        }
        Ok(DatasetUrl { scheme, authority: authority.to_string(), key: key.to_string() })
    }

    fn local(path: &str) -> Result<DatasetUrl, String> {
        let absolute =
            std::path::absolute(path).map_err(|e| format!("cannot resolve local path: {e}"))?;
        let text = absolute.to_str().ok_or("local path is not UTF-8")?;
        // Keep a trailing slash: it marks a prefix listing.
        let mut key = text.trim_start_matches('/').to_string();
        if path.ends_with('/') && !key.ends_with('/') && !key.is_empty() {
            key.push('/');
        }
        Ok(DatasetUrl { scheme: Scheme::File, authority: String::new(), key })
    }

    /// The URL of one object in this store, for messages and `--keys-out`
    /// (credentials in the authority redacted).
    pub fn object_url(&self, key: &str) -> String {
        match self.scheme {
            Scheme::File => format!("file:///{key}"),
            s => {
                let shown = match self.authority.rsplit_once('@') {
                    Some((_, host)) => format!("REDACTED@{host}"),
                    None => self.authority.clone(),
                };
                format!("{}://{shown}/{key}", s.prefix())
            }
        }
    }

    /// The longest key this store takes.
    pub fn max_key_bytes(&self) -> usize {
        match self.scheme {
            Scheme::File | Scheme::Http | Scheme::Https => 4096,
            _ => MAX_KEY_BYTES,
        }
    }

    /// The store this URL names (scheme and bucket or host): the key of the
    /// process-wide request-rate gate and of the daemon's fetch engines.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme.prefix(), self.authority)
    }

    /// The whole URL back.
    pub fn to_url(&self) -> String {
        self.object_url(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_with_pattern() {
        let u = DatasetUrl::parse("s3://b/train/s-{0..3}.tar").unwrap();
        assert_eq!(
            (u.scheme, u.authority.as_str(), u.key.as_str()),
            (Scheme::S3, "b", "train/s-{0..3}.tar")
        );
        assert_eq!(u.to_url(), "s3://b/train/s-{0..3}.tar");
    }

    #[test]
    fn local_paths_become_file_urls() {
        let u = DatasetUrl::parse("/tmp/data/").unwrap();
        assert_eq!((u.scheme, u.key.as_str()), (Scheme::File, "tmp/data/"));
        let u = DatasetUrl::parse("file:///tmp/x.tar").unwrap();
        assert_eq!(u.object_url(&u.key), "file:///tmp/x.tar");
    }

    #[test]
    fn credentials_are_not_echoed_and_length_is_bounded() {
        let u = DatasetUrl::parse("http://user:secret@host:9000/b/x.tar").unwrap();
        assert_eq!(u.to_url(), "http://REDACTED@host:9000/b/x.tar");
        let long = format!("s3://b/{}", "k".repeat(70_000));
        let err = DatasetUrl::parse(&long).unwrap_err().to_string();
        assert!(err.len() < 512 && err.contains("70007 bytes"), "{err}");
        let err = DatasetUrl::parse("ftp://user:secret@h/x").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn malformed_urls_are_named_errors() {
        for url in ["", "ftp://h/x", "s3:///key", "s3://{a,b}/k", "file://relative/x", "bucket:key"]
        {
            let err = DatasetUrl::parse(url).unwrap_err();
            assert!(matches!(err, SourceError::BadUrl { .. }), "{url}: {err}");
        }
    }
}
