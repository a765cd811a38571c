//! The batch layout: the contract between collation and every consumer.
//!
//! One contiguous buffer per batch. Per column (the sample keys first, then
//! each field in name order): an array of `n + 1` little-endian u64 offsets
//! into the column's values blob (Arrow's variable-length binary layout;
//! `offsets[0] == 0`), then the values. Every region starts on a 64-byte
//! boundary, so numpy/torch views over a mapping are aligned.
//!
//! ```text
//!  0            64·k
//!  ├ key offsets ┼ key values ┼ cls offsets ┼ cls values ┼ jpg offsets ┼ jpg values ┤
//!    (n+1)×u64     utf-8         (n+1)×u64                  (n+1)×u64
//! ```
//!
//! A sample without some field has an empty value there.

/// Alignment of every region in the buffer.
pub const ALIGN: u64 = 64;

/// Where one column lives in the batch buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Field name (`jpg`, `cls`), or `__key__` for the sample keys.
    pub name: String,
    /// Byte offset of the `n + 1` u64 offsets.
    pub offsets_at: u64,
    /// Byte offset and length of the values blob.
    pub values_at: u64,
    pub values_len: u64,
}

/// A collated batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub buf: Vec<u8>,
    pub num_samples: usize,
    pub keys: Column,
    pub columns: Vec<Column>,
    /// The epoch the samples belong to.
    pub epoch: u64,
    /// Position of this batch in the rank's epoch, from 0.
    pub index: u64,
}

impl Batch {
    /// Payload bytes: the values of every field (keys excluded).
    pub fn payload_bytes(&self) -> u64 {
        self.columns.iter().map(|c| c.values_len).sum()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Offset `i` (0..=n) of `col`.
    pub fn offset(&self, col: &Column, i: usize) -> u64 {
        offset_in(&self.buf, col, i).unwrap_or(0)
    }

    /// The value of sample `i` in `col`.
    pub fn value(&self, col: &Column, i: usize) -> &[u8] {
        value_in(&self.buf, col, i).unwrap_or(&[])
    }

    /// The key of sample `i`.
    pub fn key(&self, i: usize) -> &str {
        key_in(&self.buf, &self.keys, i)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (0..self.num_samples).map(|i| self.key(i))
    }
}

/// Offset `i` (0..=n) of `col` in a collated buffer (a `Batch`'s, or a
/// ring slot's); `None` past its end.
pub fn offset_in(buf: &[u8], col: &Column, i: usize) -> Option<u64> {
    let at = usize::try_from(col.offsets_at).ok()?.checked_add(i.checked_mul(8)?)?;
    Some(u64::from_le_bytes(buf.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The value of sample `i` in `col` of a collated buffer; `None` where the
/// offsets do not fit it.
pub fn value_in<'a>(buf: &'a [u8], col: &Column, i: usize) -> Option<&'a [u8]> {
    let base = usize::try_from(col.values_at).ok()?;
    let a = usize::try_from(offset_in(buf, col, i)?).ok()?;
    let b = usize::try_from(offset_in(buf, col, i + 1)?).ok()?;
    buf.get(base.checked_add(a)?..base.checked_add(b)?)
}

/// The key of sample `i` (keys are written from `String`s: UTF-8).
pub fn key_in<'a>(buf: &'a [u8], keys: &Column, i: usize) -> &'a str {
    value_in(buf, keys, i).and_then(|k| std::str::from_utf8(k).ok()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::collate;
    use crate::synth::SynthConfig;

    /// Keys read from a slot's bytes (as `bench --gpu` reads its ring) are
    /// the batch's own; a buffer cut short reads empty, never panics.
    #[test]
    fn values_read_from_bytes_match_the_batch_and_a_short_buffer_is_none() {
        let samples = SynthConfig::test_samples(100_000, 5_000);
        let batch = collate(&samples[..5], 0, 0);
        let read: Vec<&str> = (0..5).map(|i| key_in(&batch.buf, &batch.keys, i)).collect();
        assert_eq!(read, samples[..5].iter().map(|s| s.key.as_str()).collect::<Vec<_>>());
        assert_eq!(value_in(&batch.buf[..16], &batch.keys, 4), None);
        assert_eq!(key_in(&batch.buf[..16], &batch.keys, 4), "");
        assert_eq!(offset_in(&batch.buf, &batch.keys, usize::MAX), None);
    }
}
