//! Collation: samples become one batch buffer in the layout of
//! [`super::layout`]. Sizes are summed first, so the buffer is sized once;
//! a serial pass writes the offsets, the keys and small values front to
//! back and notes where each large value goes; the large values (the bulk
//! of a batch) are then copied in parallel on a small rayon pool (from 4
//! cores up; on fewer, by the calling thread). That copy is
//! the one copy from the part buffers to the batch, and on one thread it
//! bounded a session at one core's memory bandwidth (~5 GB/s on an H100
//! host, `docs/BENCHMARKS.md`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::layout::{ALIGN, Batch, Column};
use crate::shard::Sample;

/// The column name of the sample keys.
pub const KEY_COLUMN: &str = "__key__";

/// Values at least this long are copied after the serial pass.
const BULK_PIECE: usize = 4 << 10;
/// Less bulk than this is copied on the calling thread: handing work to the
/// pool costs more than it saves.
const PARALLEL_MIN: usize = 2 << 20;
/// The bytes of one parallel copy task.
const TASK_BYTES: usize = 1 << 20;

/// The copy threads, shared by every session: half the cores, up to 8.
/// Memory bandwidth saturates with a few threads, and the trainer beside
/// the daemon needs the rest. Below 4 cores there is no pool (`None`, as
/// where it could not start): copies stay on the calling thread. One
/// core's copy (~5 GB/s) is more than such a node fetches, and on 2 cores
/// a pool of 2 cost CPU (idle workers yield in a loop before they sleep,
/// each a context switch beside the I/O thread): loopback passes took
/// 1–15% more CPU-s with it, 6 of 6 alternating rounds.
fn copy_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if cores < 4 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores / 2).min(8))
            .thread_name(|i| format!("stoker-copy-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Where a batch goes: a `Vec` grown front to back (its own buffer; no
/// zeroing, so no parallel copy), or a slice sized by [`batch_bytes`] (a
/// ring slot).
enum Dest<'a> {
    Grow(&'a mut Vec<u8>),
    Fixed(&'a mut [u8]),
}

/// Writes front to back; into a fixed slice, large pieces are noted
/// (where, what) and copied by [`Writer::finish`].
struct Writer<'a, 's> {
    dest: Dest<'a>,
    at: usize,
    bulk: Vec<(usize, &'s [u8])>,
}

impl<'a, 's> Writer<'a, 's> {
    fn put(&mut self, bytes: &[u8]) {
        match &mut self.dest {
            Dest::Grow(v) => v.extend_from_slice(bytes),
            // Callers size the slice with `batch_bytes`; a short slice is
            // a bug, caught here rather than by writing out of bounds.
            Dest::Fixed(buf) => buf[self.at..self.at + bytes.len()].copy_from_slice(bytes),
        }
        self.at += bytes.len();
    }

    fn put_value(&mut self, bytes: &'s [u8]) {
        if matches!(self.dest, Dest::Grow(_)) || bytes.len() < BULK_PIECE {
            return self.put(bytes);
        }
        self.bulk.push((self.at, bytes));
        self.at += bytes.len();
    }

    fn pad_to(&mut self, align: u64) {
        let rem = self.at as u64 % align;
        if rem != 0 {
            const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
            self.put(&ZEROS[..(align - rem) as usize]);
        }
    }

    /// Copies the noted pieces; returns the bytes written.
    fn finish(self) -> usize {
        let Writer { dest: Dest::Fixed(buf), at, bulk, .. } = self else {
            return self.at;
        };
        let parallel = bulk.iter().map(|(_, src)| src.len()).sum::<usize>() >= PARALLEL_MIN;
        // Disjoint destinations, in order: carve them out of the buffer,
        // cutting large pieces, and group them into tasks of ~TASK_BYTES.
        let mut tasks: Vec<Vec<(&mut [u8], &[u8])>> = Vec::new();
        let (mut rest, mut rest_at, mut task_bytes) = (&mut buf[..], 0usize, TASK_BYTES);
        for (to, src) in bulk {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(to - rest_at);
            let (mut dst, tail) = tail.split_at_mut(src.len());
            (rest, rest_at) = (tail, to + src.len());
            let mut src = src;
            while !src.is_empty() {
                if task_bytes >= TASK_BYTES {
                    tasks.push(Vec::new());
                    task_bytes = 0;
                }
                let n = src.len().min(TASK_BYTES - task_bytes);
                let (d, d_rest) = std::mem::take(&mut dst).split_at_mut(n);
                let (s, s_rest) = src.split_at(n);
                if let Some(task) = tasks.last_mut() {
                    task.push((d, s));
                }
                (dst, src, task_bytes) = (d_rest, s_rest, task_bytes + n);
            }
        }
        let copy = |task: Vec<(&mut [u8], &[u8])>| {
            for (dst, src) in task {
                dst.copy_from_slice(src);
            }
        };
        match copy_pool() {
            Some(pool) if parallel => pool.install(|| tasks.into_par_iter().for_each(copy)),
            _ => tasks.into_iter().for_each(copy),
        }
        at
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
    let w = Writer { dest: Dest::Grow(&mut buf), at: 0, bulk: Vec::new() };
    let (keys, columns, _) = collate_with(samples, w);
    Batch { buf, num_samples: samples.len(), keys, columns, epoch, index }
}

/// Collates `samples` into `buf`, a recycled batch buffer (its bytes
/// initialised, any contents; best with room for [`batch_bytes`]), written
/// like a ring slot, in parallel; the batch's buffer is `buf` cut to the
/// batch. Only the bytes the batch needs past `buf`'s length are zeroed
/// first (a recycled buffer is its last batch's length, and batches differ
/// by a few per cent).
pub fn collate_in(mut buf: Vec<u8>, samples: &[Sample], epoch: u64, index: u64) -> Batch {
    let need = batch_bytes(samples) as usize;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    let (keys, columns, len) = collate_into(samples, &mut buf);
    buf.truncate(len);
    Batch { buf, num_samples: samples.len(), keys, columns, epoch, index }
}

/// Collates `samples` into `buf` (at least [`batch_bytes`] long; a ring
/// slot); returns the key column, the field columns and the bytes written.
pub fn collate_into(samples: &[Sample], buf: &mut [u8]) -> (Column, Vec<Column>, usize) {
    collate_with(samples, Writer { dest: Dest::Fixed(buf), at: 0, bulk: Vec::new() })
}

fn collate_with<'s>(samples: &'s [Sample], mut w: Writer<'_, 's>) -> (Column, Vec<Column>, usize) {
    let keys = write_column(&mut w, KEY_COLUMN, samples.iter().map(|s| s.key.len() as u64), |w| {
        for s in samples {
            w.put(s.key.as_bytes());
        }
    });
    let names = field_names(samples);
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let lens = samples.iter().map(|s| s.field(name).map_or(0, |b| b.len()));
        let col = write_column(&mut w, name, lens, |w| {
            for blob in samples.iter().filter_map(|s| s.field(name)) {
                for piece in blob.pieces() {
                    w.put_value(piece);
                }
            }
        });
        columns.push(col);
    }
    (keys, columns, w.finish())
}

/// Writes one column: offsets from `lens`, then the values `write` appends.
fn write_column<'a, 's>(
    w: &mut Writer<'a, 's>,
    name: &str,
    lens: impl Iterator<Item = u64>,
    write: impl FnOnce(&mut Writer<'a, 's>),
) -> Column {
    w.pad_to(ALIGN);
    let offsets_at = w.at as u64;
    let mut acc = 0u64;
    w.put(&acc.to_le_bytes());
    for len in lens {
        acc += len;
        w.put(&acc.to_le_bytes());
    }
    w.pad_to(ALIGN);
    let values_at = w.at as u64;
    write(w);
    let values_len = w.at as u64 - values_at;
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

    #[test]
    fn megabytes_of_values_copied_in_parallel_tasks_read_back_exactly() {
        // Enough bulk for the parallel path (on a node of 4 cores or more;
        // below, the same tasks on the calling thread), a piece longer than
        // a task (it is cut), and small pieces between the large ones
        // (copied inline).
        let bytes = |n: usize, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
        };
        let sizes: [&[usize]; 4] =
            [&[3 << 20], &[5000, 100, 700_000], &[0], &[4095, 4096, 1 << 20]];
        let pieces: Vec<Vec<Vec<u8>>> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| s.iter().enumerate().map(|(j, &n)| bytes(n, (7 * i + j) as u8)).collect())
            .collect();
        let samples: Vec<Sample> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
                sample(&format!("k{i}"), &[("bin", &p), ("cls", &[b"1"])])
            })
            .collect();
        // The serial path (its own buffer) is the reference; a slot (the
        // ring) gets the parallel copy, over stale bytes.
        let b = collate(&samples, 0, 0);
        assert!(b.payload_bytes() as usize > 2 * PARALLEL_MIN);
        let bin = b.column("bin").unwrap();
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(b.value(bin, i), p.concat().as_slice(), "sample {i}");
        }
        assert_eq!(b.keys().collect::<Vec<_>>(), ["k0", "k1", "k2", "k3"]);
        let mut slot = vec![0xa5; batch_bytes(&samples) as usize];
        let (keys, columns, len) = collate_into(&samples, &mut slot);
        assert_eq!((keys, columns), (b.keys.clone(), b.columns.clone()));
        assert_eq!(len, b.buf.len());
        assert!(slot[..len] == b.buf[..], "the slot differs from the serial collation");
        // Recycled buffers, shorter than the batch, as long and longer,
        // stale bytes.
        let short = |n: usize| {
            let mut v = Vec::with_capacity(slot.len());
            v.resize(n, 0x5a);
            v
        };
        for stale in
            [short(0), short(slot.len() / 2), vec![0x5a; slot.len()], vec![0x5a; 2 * slot.len()]]
        {
            let r = collate_in(stale, &samples, 0, 0);
            assert!(r.buf == b.buf, "a recycled buffer differs from the serial collation");
            assert_eq!(r.columns, b.columns);
        }
    }
}
