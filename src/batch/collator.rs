//! Collation: samples become one batch buffer in the layout of
//! [`super::layout`]. Sizes are summed first, so the buffer is allocated
//! once and written front to back: the one copy on the way from the part
//! buffers to the batch.

use std::collections::BTreeSet;

use super::layout::{ALIGN, Batch, Column};
use crate::shard::Sample;

/// The column name of the sample keys.
pub const KEY_COLUMN: &str = "__key__";

/// Where collation writes: a growing `Vec`, or a fixed slice (a ring slot).
pub trait ByteSink {
    /// Bytes written so far.
    fn pos(&self) -> usize;
    /// Appends `bytes`; a fixed sink has been sized by [`batch_bytes`].
    fn put(&mut self, bytes: &[u8]);
    /// Appends zeros up to a multiple of `align`.
    fn pad_to(&mut self, align: u64) {
        let rem = self.pos() as u64 % align;
        if rem != 0 {
            const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
            self.put(&ZEROS[..(align - rem) as usize]);
        }
    }
}

impl ByteSink for Vec<u8> {
    fn pos(&self) -> usize {
        self.len()
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A fixed buffer written front to back.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> SliceSink<'a> {
    pub fn new(buf: &'a mut [u8]) -> SliceSink<'a> {
        SliceSink { buf, at: 0 }
    }
}

impl ByteSink for SliceSink<'_> {
    fn pos(&self) -> usize {
        self.at
    }
    fn put(&mut self, bytes: &[u8]) {
        // Callers size the slice with `batch_bytes` first; a short slice is
        // a bug, caught here rather than by writing out of bounds.
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

fn aligned(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn field_names(samples: &[Sample]) -> BTreeSet<&str> {
    samples.iter().flat_map(|s| s.fields.iter().map(|(f, _)| f.as_str())).collect()
}

/// The bytes the batch of `samples` takes in the layout (an upper bound:
/// the last region's padding is counted).
pub fn batch_bytes(samples: &[Sample]) -> u64 {
    let offsets_len = 8 * (samples.len() as u64 + 1);
    let key_bytes: u64 = samples.iter().map(|s| s.key.len() as u64).sum();
    let mut total = aligned(offsets_len) + aligned(key_bytes);
    for name in field_names(samples) {
        let bytes: u64 = samples.iter().filter_map(|s| s.field(name)).map(|b| b.len()).sum();
        total += aligned(offsets_len) + aligned(bytes);
    }
    total
}

/// Collates `samples` into one batch in its own buffer.
pub fn collate(samples: &[Sample], epoch: u64, index: u64) -> Batch {
    let mut buf = Vec::with_capacity(batch_bytes(samples) as usize);
    let (keys, columns) = collate_into(samples, &mut buf);
    Batch { buf, num_samples: samples.len(), keys, columns, epoch, index }
}

/// Collates `samples` into `sink`; returns the key column and the field
/// columns (offsets relative to where the sink started).
pub fn collate_into(samples: &[Sample], sink: &mut impl ByteSink) -> (Column, Vec<Column>) {
    let keys = write_column(sink, KEY_COLUMN, samples.iter().map(|s| s.key.len() as u64), |sink| {
        for s in samples {
            sink.put(s.key.as_bytes());
        }
    });
    let names = field_names(samples);
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let lens = samples.iter().map(|s| s.field(name).map_or(0, |b| b.len()));
        let col = write_column(sink, name, lens, |sink| {
            for blob in samples.iter().filter_map(|s| s.field(name)) {
                for piece in blob.pieces() {
                    sink.put(piece);
                }
            }
        });
        columns.push(col);
    }
    (keys, columns)
}

/// Writes one column: offsets from `lens`, then the values `write` appends.
fn write_column<S: ByteSink>(
    sink: &mut S,
    name: &str,
    lens: impl Iterator<Item = u64>,
    write: impl FnOnce(&mut S),
) -> Column {
    sink.pad_to(ALIGN);
    let offsets_at = sink.pos() as u64;
    let mut acc = 0u64;
    sink.put(&acc.to_le_bytes());
    for len in lens {
        acc += len;
        sink.put(&acc.to_le_bytes());
    }
    sink.pad_to(ALIGN);
    let values_at = sink.pos() as u64;
    write(sink);
    let values_len = sink.pos() as u64 - values_at;
    debug_assert_eq!(values_len, acc);
    Column { name: name.to_string(), offsets_at, values_at, values_len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Blob;
    use bytes::Bytes;

    fn sample(key: &str, fields: &[(&str, &[&[u8]])]) -> Sample {
        Sample {
            key: key.into(),
            fields: fields
                .iter()
                .map(|(n, pieces)| {
                    let mut b = Blob::new();
                    pieces.iter().for_each(|p| b.push(Bytes::copy_from_slice(p)));
                    (n.to_string(), b)
                })
                .collect(),
            offset: 0,
        }
    }

    #[test]
    fn layout_round_trips_with_missing_fields_and_split_blobs() {
        let samples = [
            sample("a", &[("jpg", &[b"hel", b"lo"]), ("cls", &[b"1"])]),
            sample("bb", &[("cls", &[b"22"])]),
            sample("c", &[("jpg", &[b"!"]), ("cls", &[b""])]),
        ];
        let b = collate(&samples, 3, 9);
        assert_eq!((b.num_samples, b.epoch, b.index), (3, 3, 9));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["a", "bb", "c"]);
        let names: Vec<_> = b.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cls", "jpg"]);
        let jpg = b.column("jpg").unwrap();
        assert_eq!([b.value(jpg, 0), b.value(jpg, 1), b.value(jpg, 2)], [&b"hello"[..], b"", b"!"]);
        let cls = b.column("cls").unwrap();
        assert_eq!(b.value(cls, 1), b"22");
        assert_eq!(b.payload_bytes(), 6 + 3);
        for c in b.columns.iter().chain([&b.keys]) {
            assert_eq!(c.offsets_at % ALIGN, 0);
            assert_eq!(c.values_at % ALIGN, 0);
            assert_eq!(b.offset(c, 0), 0);
        }
    }
}
