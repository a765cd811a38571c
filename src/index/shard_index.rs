//! One shard's index: its version (ETag, size), whether it can be entered
//! mid-stream, and where each sample begins.

use serde::{Deserialize, Serialize};

use crate::order::{Digest, mix64};

/// Index format version.
const VERSION: u32 = 1;
/// The most samples one shard's index may name: 4 M (a 1 GiB shard of
/// 256-byte samples; more is a hostile or broken file, or a shard to split).
pub const MAX_SAMPLES: usize = 1 << 22;

/// Where each sample of one version of a shard begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub v: u32,
    pub url: String,
    /// The version indexed: the store's ETag (when it gives one) and size.
    pub e_tag: Option<String>,
    pub size: u64,
    /// zstd-compressed: offsets are in the decompressed stream, so a reader
    /// cannot start there (it reads from byte 0 and skips).
    pub compressed: bool,
    /// Where each sample's first tar entry begins, in order.
    pub starts: Vec<u64>,
    /// Digest of everything above: a file cut short or edited is caught.
    pub check: String,
}

/// Why an index was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("unreadable index: {0}")]
    Malformed(String),
    #[error("index version {0}, this build reads {VERSION}")]
    Version(u32),
    #[error("index digest does not match its contents (cut short or edited)")]
    Digest,
    #[error("index is for {0}")]
    OtherShard(String),
    #[error("index is of another version of the shard (ETag or size differ: it changed)")]
    Stale,
    #[error("index offsets are out of order or out of range: {0}")]
    BadOffsets(String),
}

impl ShardIndex {
    pub fn new(
        url: &str,
        e_tag: Option<&str>,
        size: u64,
        compressed: bool,
        starts: Vec<u64>,
    ) -> ShardIndex {
        let mut index = ShardIndex {
            v: VERSION,
            url: url.into(),
            e_tag: e_tag.map(Into::into),
            size,
            compressed,
            starts,
            check: String::new(),
        };
        index.check = index.digest();
        index
    }

    /// Samples in the shard.
    pub fn count(&self) -> u32 {
        self.starts.len() as u32
    }

    /// Whether a reader can start at a sample's offset (a plain `.tar`).
    pub fn seekable(&self) -> bool {
        !self.compressed
    }

    fn digest(&self) -> String {
        let mut d = Digest::new(mix64(u64::from(self.v)));
        let mut eat = |bytes: &[u8]| d.eat(bytes);
        eat(self.url.as_bytes());
        eat(self.e_tag.as_deref().unwrap_or("\0none").as_bytes());
        eat(&self.size.to_le_bytes());
        eat(&[u8::from(self.compressed)]);
        for s in &self.starts {
            eat(&s.to_le_bytes());
        }
        d.hex()
    }

    /// Reads an index file's bytes: well formed, this version, intact.
    pub fn parse(bytes: &[u8]) -> Result<ShardIndex, IndexError> {
        let index: ShardIndex =
            serde_json::from_slice(bytes).map_err(|e| IndexError::Malformed(e.to_string()))?;
        if index.v != VERSION {
            return Err(IndexError::Version(index.v));
        }
        if index.check != index.digest() {
            return Err(IndexError::Digest);
        }
        index.check_offsets()?;
        Ok(index)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether this index is of `url` as it is now (`e_tag`, `size`).
    pub fn matches(&self, url: &str, e_tag: Option<&str>, size: u64) -> Result<(), IndexError> {
        if self.url != url {
            return Err(IndexError::OtherShard(self.url.clone()));
        }
        // No ETag from the store on either side: the size is all we have.
        let etag_ok = match (self.e_tag.as_deref(), e_tag) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        if !etag_ok || self.size != size {
            return Err(IndexError::Stale);
        }
        Ok(())
    }

    /// Offsets strictly increasing, block-aligned and inside the object for
    /// a plain tar; a sane count.
    fn check_offsets(&self) -> Result<(), IndexError> {
        let bad = |why: String| Err(IndexError::BadOffsets(why));
        if self.starts.is_empty() || self.starts.len() > MAX_SAMPLES {
            return bad(format!("{} samples", self.starts.len()));
        }
        if let Some(w) = self.starts.windows(2).position(|w| w[1] <= w[0]) {
            return bad(format!("sample {} does not start after sample {w}", w + 1));
        }
        if !self.compressed {
            let last = self.starts.last().copied().unwrap_or(0);
            if self.starts.iter().any(|s| s % 512 != 0) || last >= self.size {
                return bad(format!("a start is not a 512-byte block inside {} bytes", self.size));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ShardIndex {
        ShardIndex::new("s3://b/a.tar", Some("\"e1\""), 10_240, false, vec![0, 1024, 4096])
    }

    #[test]
    fn round_trips_and_matches_its_version_only() {
        let i = index();
        let back = ShardIndex::parse(&i.encode()).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.count(), 3);
        assert!(back.matches("s3://b/a.tar", Some("\"e1\""), 10_240).is_ok());
        assert_eq!(back.matches("s3://b/a.tar", Some("\"e2\""), 10_240), Err(IndexError::Stale));
        assert_eq!(back.matches("s3://b/a.tar", Some("\"e1\""), 10_752), Err(IndexError::Stale));
        assert_eq!(back.matches("s3://b/a.tar", None, 10_240), Err(IndexError::Stale));
        assert!(matches!(back.matches("s3://b/c.tar", None, 1), Err(IndexError::OtherShard(_))));
    }

    #[test]
    fn edited_or_broken_files_are_refused() {
        let text = String::from_utf8(index().encode()).unwrap();
        let edited = text.replace("1024", "1536");
        assert_eq!(ShardIndex::parse(edited.as_bytes()), Err(IndexError::Digest));
        assert!(matches!(ShardIndex::parse(&text.as_bytes()[..40]), Err(IndexError::Malformed(_))));
        let unordered = ShardIndex::new("u", None, 10_240, false, vec![0, 4096, 1024]);
        assert!(matches!(ShardIndex::parse(&unordered.encode()), Err(IndexError::BadOffsets(_))));
        let past_end = ShardIndex::new("u", None, 1024, false, vec![0, 1024]);
        assert!(matches!(ShardIndex::parse(&past_end.encode()), Err(IndexError::BadOffsets(_))));
        let unaligned = ShardIndex::new("u", None, 10_240, false, vec![0, 100]);
        assert!(matches!(ShardIndex::parse(&unaligned.encode()), Err(IndexError::BadOffsets(_))));
        // Compressed offsets are in the decompressed stream: past the size is fine.
        let zst = ShardIndex::new("u", None, 100, true, vec![0, 1024]);
        assert!(ShardIndex::parse(&zst.encode()).is_ok());
        let mut future = index();
        future.v = 9;
        assert_eq!(ShardIndex::parse(&future.encode()), Err(IndexError::Version(9)));
    }
}
