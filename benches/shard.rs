//! Tar parsing throughput: our zero-copy push parser against the reference
//! crate `webdataset` on the same 32 MiB shard held in memory.
//!
//! `cargo bench --bench shard`; criterion prints GiB/s per parser.

use std::io::Cursor;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stoker::shard::parse_shard_bytes;
use stoker::synth::SynthConfig;

fn shard(zstd: bool) -> Bytes {
    let cfg = SynthConfig { shards: 1, zstd, ..SynthConfig::default() };
    Bytes::from(cfg.shard_bytes_of(0).expect("synthetic shard"))
}

fn bench_parsers(c: &mut Criterion) {
    for zstd in [false, true] {
        let bytes = shard(zstd);
        let name = if zstd { "tar.zst" } else { "tar" };
        let mut group = c.benchmark_group(format!("parse_{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.sample_size(20);
        group.bench_function("stoker", |b| {
            b.iter(|| {
                let samples =
                    parse_shard_bytes("bench", bytes.clone(), 8 << 20, u64::MAX).expect("parse");
                assert!(!samples.is_empty());
                samples.len()
            })
        });
        group.bench_function("webdataset", |b| {
            b.iter(|| {
                let files =
                    webdataset::shard::reader::TarFiles::new(Box::new(Cursor::new(bytes.clone())))
                        .expect("open");
                let mut n = 0;
                for sample in webdataset::shard::reader::group_by_keys(files) {
                    sample.expect("parse");
                    n += 1;
                }
                assert!(n > 0);
                n
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_parsers);
criterion_main!(benches);
