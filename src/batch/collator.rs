//! Collation: samples become one batch buffer in the layout of
//! [`super::layout`]. Sizes are summed first, so the buffer is allocated
//! once and written front to back: the one copy on the way from the part
//! buffers to the batch.

use std::collections::BTreeSet;

use super::layout::{ALIGN, Batch, Column};
use crate::shard::Sample;

/// The column name of the sample keys.
pub const KEY_COLUMN: &str = "__key__";

fn pad_to(buf: &mut Vec<u8>, align: u64) {
    let rem = buf.len() as u64 % align;
    if rem != 0 {
        buf.resize(buf.len() + (align - rem) as usize, 0);
    }
}

fn aligned(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Collates `samples` into one batch.
pub fn collate(samples: &[Sample], epoch: u64, index: u64) -> Batch {
    let n = samples.len();
    let names: BTreeSet<&str> =
        samples.iter().flat_map(|s| s.fields.iter().map(|(f, _)| f.as_str())).collect();
    let offsets_len = 8 * (n as u64 + 1);
    let key_bytes: u64 = samples.iter().map(|s| s.key.len() as u64).sum();
    let mut total = aligned(offsets_len) + aligned(key_bytes);
    for name in &names {
        let bytes: u64 = samples.iter().filter_map(|s| s.field(name)).map(|b| b.len()).sum();
        total += aligned(offsets_len) + aligned(bytes);
    }
    let mut buf = Vec::with_capacity(total as usize);

    let keys =
        write_column(&mut buf, KEY_COLUMN, samples.iter().map(|s| s.key.len() as u64), |buf| {
            for s in samples {
                buf.extend_from_slice(s.key.as_bytes());
            }
        });
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let col = write_column(
            &mut buf,
            name,
            samples.iter().map(|s| s.field(name).map_or(0, |b| b.len())),
            |buf| {
                for blob in samples.iter().filter_map(|s| s.field(name)) {
                    for piece in blob.pieces() {
                        buf.extend_from_slice(piece);
                    }
                }
            },
        );
        columns.push(col);
    }
    debug_assert!(buf.len() as u64 <= total);
    Batch { buf, num_samples: n, keys, columns, epoch, index }
}

/// Writes one column: offsets from `lens`, then the values `write` appends.
fn write_column(
    buf: &mut Vec<u8>,
    name: &str,
    lens: impl Iterator<Item = u64>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Column {
    pad_to(buf, ALIGN);
    let offsets_at = buf.len() as u64;
    let mut acc = 0u64;
    buf.extend_from_slice(&acc.to_le_bytes());
    for len in lens {
        acc += len;
        buf.extend_from_slice(&acc.to_le_bytes());
    }
    pad_to(buf, ALIGN);
    let values_at = buf.len() as u64;
    write(buf);
    let values_len = buf.len() as u64 - values_at;
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
