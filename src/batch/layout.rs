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
        let at = (col.offsets_at + 8 * i as u64) as usize;
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.buf[at..at + 8]);
        u64::from_le_bytes(word)
    }

    /// The value of sample `i` in `col`.
    pub fn value(&self, col: &Column, i: usize) -> &[u8] {
        let (a, b) = (self.offset(col, i), self.offset(col, i + 1));
        &self.buf[(col.values_at + a) as usize..(col.values_at + b) as usize]
    }

    /// The key of sample `i`.
    pub fn key(&self, i: usize) -> &str {
        // Keys are written from `String`s, so they are UTF-8.
        std::str::from_utf8(self.value(&self.keys, i)).unwrap_or("")
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (0..self.num_samples).map(|i| self.key(i))
    }
}
