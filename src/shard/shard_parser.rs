//! One shard's bytes in, its samples out: zstd (if the bytes say so), tar,
//! grouping.
//!
//! ```text
//!  parts ─▶ [zstd, if magic] ─▶ TarStream ─members─▶ SampleGrouper ─▶ samples
//! ```

use std::sync::Arc;

use bytes::Bytes;

use super::ShardError;
use super::sample_grouper::{Sample, SampleGrouper};
use super::tar_stream::TarStream;
use super::zstd_stream::{ZstdStream, is_zstd};

/// Parser state for one shard.
#[derive(Debug)]
pub struct ShardParser {
    shard: Arc<str>,
    started: bool,
    /// The first bytes, while fewer than a zstd magic number have arrived.
    head: Vec<u8>,
    zstd: Option<ZstdStream>,
    compressed: bool,
    tar: TarStream,
    grouper: SampleGrouper,
    samples: u64,
    /// The bytes stop before the archive's end marker, at an entry
    /// boundary (a range of samples read by the index's offsets).
    ends_early: bool,
}

impl ShardParser {
    /// A parser for `shard` that rejects members over `max_member_bytes`.
    pub fn new(shard: Arc<str>, max_member_bytes: u64) -> ShardParser {
        ShardParser {
            tar: TarStream::new(shard.clone(), max_member_bytes),
            grouper: SampleGrouper::new(shard.clone()),
            shard,
            started: false,
            head: Vec::new(),
            zstd: None,
            compressed: false,
            samples: 0,
            ends_early: false,
        }
    }

    /// A parser for the bytes of a plain tar from `offset` (a sample's
    /// start, from the index); `ends_early`: they stop at another sample's
    /// start, before the end marker.
    pub fn plain_tar_from(
        shard: Arc<str>,
        max_member_bytes: u64,
        offset: u64,
        ends_early: bool,
    ) -> ShardParser {
        let mut parser = ShardParser::new(shard, max_member_bytes);
        parser.tar = TarStream::new(parser.shard.clone(), max_member_bytes).starting_at(offset);
        // Not sniffed: a name's first bytes could look like zstd's magic.
        parser.started = true;
        parser.ends_early = ends_early;
        parser
    }

    /// Whether the shard's bytes are zstd (known once its first 4 arrived).
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Feeds the next part; completed samples go to `out`.
    pub fn push(&mut self, mut part: Bytes, out: &mut Vec<Sample>) -> Result<(), ShardError> {
        if !self.started {
            // Compression is read from the bytes, not the name: a `.tar`
            // that is really zstd (or the reverse) still reads. Parts can be
            // tiny, so gather the 4 magic bytes first.
            if self.head.is_empty() && part.len() >= 4 {
                self.start(&part[..4])?;
            } else {
                self.head.extend_from_slice(&part);
                if self.head.len() < 4 {
                    return Ok(());
                }
                part = Bytes::from(std::mem::take(&mut self.head));
                self.start(&part[..4])?;
            }
        }
        self.feed(part, out)
    }

    fn start(&mut self, magic: &[u8]) -> Result<(), ShardError> {
        self.started = true;
        if is_zstd(magic) {
            self.zstd = Some(ZstdStream::new(self.shard.clone())?);
            self.compressed = true;
        }
        Ok(())
    }

    fn feed(&mut self, part: Bytes, out: &mut Vec<Sample>) -> Result<(), ShardError> {
        match self.zstd.take() {
            Some(mut z) => {
                // Each decompressed chunk goes to the tar parser at once.
                let r = z.push(&part, &mut |chunk| self.feed_tar(chunk, out));
                self.zstd = Some(z);
                r
            }
            None => self.feed_tar(part, out),
        }
    }

    /// Ends the shard: flushes, checks it ended cleanly, emits the last sample.
    pub fn finish(mut self, out: &mut Vec<Sample>) -> Result<u64, ShardError> {
        if !self.head.is_empty() {
            let head = Bytes::from(std::mem::take(&mut self.head));
            self.start(&head)?;
            self.feed(head, out)?;
        }
        if let Some(mut z) = self.zstd.take() {
            z.finish(&mut |chunk| self.feed_tar(chunk, out))?;
        }
        if !(self.ends_early && self.tar.at_entry_boundary()) {
            self.tar.finish()?;
        }
        if let Some(sample) = self.grouper.finish() {
            self.samples += 1;
            out.push(sample);
        }
        if self.samples == 0 {
            return Err(ShardError::NoSamples { shard: self.shard.to_string() });
        }
        Ok(self.samples)
    }

    fn feed_tar(&mut self, chunk: Bytes, out: &mut Vec<Sample>) -> Result<(), ShardError> {
        self.tar.push(chunk)?;
        while let Some(member) = self.tar.next_member() {
            if let Some(sample) = self.grouper.push(member)? {
                self.samples += 1;
                out.push(sample);
            }
        }
        Ok(())
    }
}

/// Parses a whole shard held in memory (tests, `inspect`, benches).
pub fn parse_shard_bytes(
    shard: &str,
    bytes: Bytes,
    part_bytes: usize,
    max_member_bytes: u64,
) -> Result<Vec<Sample>, ShardError> {
    let mut parser = ShardParser::new(shard.into(), max_member_bytes);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + part_bytes.max(1)).min(bytes.len());
        parser.push(bytes.slice(at..end), &mut out)?;
        at = end;
    }
    parser.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `n` two-field samples; every third key is long enough to
    /// need a GNU long-name entry before its header.
    fn archive(n: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..n {
            let key = if i % 3 == 0 {
                format!("{}/s{i:04}", "d".repeat(120))
            } else {
                format!("s{i:04}")
            };
            for (field, len) in [("bin", 700 + i * 37), ("cls", 3)] {
                let data = vec![i as u8; len];
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, format!("{key}.{field}"), data.as_slice()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn every_sample_offset_is_a_place_to_start_reading() {
        let bytes = Bytes::from(archive(9));
        let all = parse_shard_bytes("t", bytes.clone(), 333, 1 << 20).unwrap();
        assert_eq!(all.len(), 9);
        for (k, sample) in all.iter().enumerate() {
            assert_eq!(sample.offset % 512, 0);
            // From sample k's offset on: the same samples, k onwards.
            let tail = parse_shard_bytes("t", bytes.slice(sample.offset as usize..), 333, 1 << 20)
                .unwrap();
            let keys: Vec<&str> = tail.iter().map(|s| s.key.as_str()).collect();
            let want: Vec<&str> = all[k..].iter().map(|s| s.key.as_str()).collect();
            assert_eq!(keys, want, "from sample {k}");
            assert_eq!(
                tail[0].field("bin").unwrap().to_bytes(),
                all[k].field("bin").unwrap().to_bytes()
            );
        }
        // A long name's sample starts at its long-name entry (type 'L'),
        // not at its file header after it.
        assert!(all[3].key.len() > 100);
        assert_eq!(bytes[all[3].offset as usize + 156], b'L');
        assert_ne!(bytes[all[4].offset as usize + 156], b'L');
    }
}
