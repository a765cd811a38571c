//! Grouping tar members into WebDataset samples.
//!
//! The rule of the webdataset libraries: a member's key is its path up to
//! the first dot of its last component, its field the rest, lowercased;
//! consecutive members with one key form a sample. Names without a basename
//! or extension, and shard metadata such as `__index__`, belong to no
//! sample.

use std::sync::Arc;

use super::ShardError;
use super::blob::Blob;
use super::tar_stream::Member;

/// One sample: its key and its fields, in archive order.
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: String,
    pub fields: Vec<(String, Blob)>,
    /// Where the sample's first entry begins in the tar stream (its
    /// long-name/PAX header if any): a parser started here reads it whole.
    pub offset: u64,
}

impl Sample {
    /// Payload bytes over all fields.
    pub fn nbytes(&self) -> u64 {
        self.fields.iter().map(|(_, b)| b.len()).sum()
    }

    pub fn field(&self, name: &str) -> Option<&Blob> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// The same sample with its bytes copied out of the part buffers.
    pub fn compacted(&self) -> Sample {
        Sample {
            key: self.key.clone(),
            fields: self.fields.iter().map(|(n, b)| (n.clone(), b.compacted())).collect(),
            offset: self.offset,
        }
    }
}

/// Splits a member name into (key, field), as webdataset's `base_plus_ext`.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let start = name.rfind('/').map_or(0, |at| at + 1);
    let dot = start + name[start..].find('.')?;
    if dot == start {
        return None;
    }
    Some((&name[..dot], &name[dot + 1..]))
}

/// Whether a member is shard-level metadata (`__index__`, `__dup__/…`).
pub fn is_shard_metadata(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("__") else {
        return false;
    };
    let Some(end) = rest.find("__") else {
        return false;
    };
    !rest[..end].contains('/') && (rest[end + 2..].is_empty() || rest[end + 2..].starts_with('/'))
}

/// Assembles consecutive members into samples.
#[derive(Debug)]
pub struct SampleGrouper {
    shard: Arc<str>,
    current: Option<Sample>,
}

impl SampleGrouper {
    pub fn new(shard: Arc<str>) -> SampleGrouper {
        SampleGrouper { shard, current: None }
    }

    /// Adds a member; returns the previous sample when this one starts a new key.
    pub fn push(&mut self, member: Member) -> Result<Option<Sample>, ShardError> {
        if is_shard_metadata(&member.name) {
            return Ok(None);
        }
        let Some((key, field)) = split_name(&member.name) else {
            return Ok(None);
        };
        let field = field.to_ascii_lowercase();
        let mut finished = None;
        if self.current.as_ref().is_none_or(|s| s.key != key) {
            finished = self.current.take();
            self.current = Some(Sample {
                key: key.to_string(),
                fields: Vec::with_capacity(4),
                offset: member.start,
            });
        }
        let Some(sample) = self.current.as_mut() else {
            unreachable!("a current sample was just ensured")
        };
        if sample.fields.iter().any(|(n, _)| *n == field) {
            return Err(ShardError::DuplicateField {
                shard: self.shard.to_string(),
                offset: member.offset,
                key: sample.key.clone(),
                field,
            });
        }
        sample.fields.push((field, member.data));
        Ok(finished)
    }

    /// The last sample of the shard.
    pub fn finish(&mut self) -> Option<Sample> {
        self.current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_webdataset() {
        assert_eq!(split_name("a/b.c/x.jpg.gz"), Some(("a/b.c/x", "jpg.gz")));
        assert_eq!(split_name("x.cls"), Some(("x", "cls")));
        assert_eq!(split_name("dir/.hidden"), None);
        assert_eq!(split_name("noext"), None);
        assert!(is_shard_metadata("__index__"));
        assert!(is_shard_metadata("__dup__/x.jpg"));
        assert!(!is_shard_metadata("__a/b__"));
        assert!(!is_shard_metadata("x__y__"));
    }
}
