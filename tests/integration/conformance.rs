//! Our tar/WebDataset parser against the reference crate `webdataset`
//! (webdataset-rs): on the same shards, both must produce the same samples,
//! keys, fields and bytes, however the shard is cut into parts.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use stoker::shard::parse_shard_bytes;
use webdataset::shard::{Compression, TarWriter};
use webdataset::{Sample as WdsSample, Value};

/// (key, [(field, bytes)]) in archive order, fields sorted.
type Flat = Vec<(String, Vec<(String, Vec<u8>)>)>;

fn oracle(bytes: &[u8]) -> Flat {
    let files = webdataset::shard::reader::TarFiles::new(Box::new(Cursor::new(bytes.to_vec())))
        .expect("oracle opens");
    let mut out = Vec::new();
    for sample in webdataset::shard::reader::group_by_keys(files) {
        let sample = sample.expect("oracle parses");
        let key = sample.key().expect("key").to_string();
        let mut fields: Vec<(String, Vec<u8>)> = sample
            .field_names()
            .into_iter()
            .map(|f| {
                (f.to_string(), sample.get(f).and_then(Value::as_bytes).expect("bytes").to_vec())
            })
            .collect();
        fields.sort();
        out.push((key, fields));
    }
    out
}

fn ours(bytes: &[u8], part: usize) -> Flat {
    let samples =
        parse_shard_bytes("mem://shard.tar", Bytes::copy_from_slice(bytes), part, u64::MAX)
            .expect("ours parses");
    samples
        .into_iter()
        .map(|s| {
            let mut fields: Vec<_> =
                s.fields.iter().map(|(f, b)| (f.clone(), b.to_bytes().to_vec())).collect();
            fields.sort();
            (s.key, fields)
        })
        .collect()
}

/// A shard written by webdataset's own writer, with long keys (GNU long
/// names), upper-case extensions, multi-dot fields and an empty member.
fn wds_shard(n: usize, zstd: bool) -> Vec<u8> {
    let buf = SharedBuf::default();
    let compression = if zstd { Compression::Zstd } else { Compression::None };
    let mut w =
        TarWriter::new(Box::new(buf.clone()), compression).expect("writer").with_mtime(Some(0));
    for i in 0..n {
        let key = if i % 3 == 0 {
            format!("dir/sub/{}{i:04}", "long-name-".repeat(12))
        } else {
            format!("k{i:04}")
        };
        let mut s = WdsSample::with_key(key);
        s.insert("jpg", Value::Bytes(Bytes::from(vec![(i % 251) as u8; 100 + i * 37])));
        s.insert("cls", Value::Text(format!("{}", i % 10)));
        s.insert("seg.png", Value::Bytes(Bytes::from(vec![7u8; i % 3])));
        s.insert("TXT", Value::Text(format!("sample {i}")));
        w.write(&s).expect("write");
    }
    w.close().expect("close");
    buf.take()
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().expect("lock"))
    }
}

#[test]
fn agrees_with_webdataset_on_its_own_shards() {
    for zstd in [false, true] {
        let shard = wds_shard(40, zstd);
        let want = oracle(&shard);
        assert_eq!(want.len(), 40);
        assert!(want.iter().any(|(k, _)| k.len() > 100), "long names are exercised");
        for part in [1, 511, 512, 513, 4096, 1 << 20] {
            assert_eq!(ours(&shard, part), want, "zstd {zstd}, part {part}");
        }
    }
}

#[test]
fn agrees_with_webdataset_on_synthetic_shards() {
    let cfg = stoker::synth::SynthConfig {
        shards: 1,
        shard_bytes: 300_000,
        sample_bytes: 9_000,
        ..Default::default()
    };
    for zstd in [false, true] {
        let shard =
            stoker::synth::SynthConfig { zstd, ..cfg.clone() }.shard_bytes_of(0).expect("synth");
        assert_eq!(ours(&shard, 65_536), oracle(&shard));
    }
}

/// A PAX extended header carrying the path, as Python's tarfile writes for
/// long or non-ASCII names.
fn pax_shard() -> Vec<u8> {
    let long = format!("pax/{}/ünïcode-sample.json", "deep".repeat(40));
    let record = |k: &str, v: &str| {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    };
    let pax = record("path", &long);
    let mut out = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").expect("path");
    h.set_size(pax.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(pax.as_bytes());
    out.resize(out.len().div_ceil(512) * 512, 0);
    let data = b"{\"a\":1}";
    let mut h = tar::Header::new_ustar();
    h.set_path("truncated-name.json").expect("path");
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn pax_paths_agree() {
    let shard = pax_shard();
    let want = oracle(&shard);
    assert_eq!(want.len(), 1);
    assert!(want[0].0.ends_with("ünïcode-sample"), "{:?}", want[0].0);
    assert_eq!(ours(&shard, 100), want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_part_size_agrees(part in 1usize..20_000, n in 1usize..30) {
        let shard = wds_shard(n, false);
        prop_assert_eq!(ours(&shard, part), oracle(&shard));
    }
}
