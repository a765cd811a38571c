//! Collation throughput: samples (as slices of part buffers) into one batch
//! buffer in the batch layout.
//!
//! `cargo bench --bench batch`; criterion prints GiB/s of payload.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stoker::batch::collate;
use stoker::shard::parse_shard_bytes;
use stoker::synth::SynthConfig;

fn bench_collate(c: &mut Criterion) {
    let mut group = c.benchmark_group("collate");
    for (label, sample_bytes, batch) in [("64x128KiB", 128 << 10, 64), ("256x4KiB", 4 << 10, 256)] {
        let cfg = SynthConfig {
            shards: 1,
            shard_bytes: 16 << 20,
            sample_bytes,
            ..SynthConfig::default()
        };
        let shard = Bytes::from(cfg.shard_bytes_of(0).expect("synthetic shard"));
        let samples = parse_shard_bytes("bench", shard, 8 << 20, u64::MAX).expect("parse");
        let samples = &samples[..batch.min(samples.len())];
        let payload: u64 = samples.iter().map(|s| s.nbytes()).sum();
        group.throughput(Throughput::Bytes(payload));
        group.bench_function(label, |b| b.iter(|| collate(samples, 0, 0).buf.len()));
    }
    group.finish();
}

criterion_group!(benches, bench_collate);
criterion_main!(benches);
