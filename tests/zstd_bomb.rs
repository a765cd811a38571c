//! A `.tar.zst` bomb: a few KB of zstd holding a 1 GiB member of zeros.
//! The parser must refuse the member when its header is decompressed, with
//! memory for a chunk, not for the part's whole output. Its own test binary
//! (its own process), so the peak RSS it reads is its own.

use std::io::Write;

use bytes::Bytes;
use stoker::shard::{ShardError, parse_shard_bytes};

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmHWM");
    kb * 1024
}

/// A tar stream of one member claiming `size` bytes of zeros, zstd-compressed.
fn bomb(size: u64) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
    let mut header = tar::Header::new_ustar();
    header.set_path("sample0.bin").expect("path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    enc.write_all(header.as_bytes()).expect("header");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size / zeros.len() as u64 {
        enc.write_all(&zeros).expect("zeros");
    }
    enc.write_all(&[0u8; 1024]).expect("end blocks");
    enc.finish().expect("finish")
}

#[test]
fn a_zstd_bomb_is_refused_at_its_header_with_bounded_memory() {
    let compressed = bomb(1 << 30);
    assert!(compressed.len() < 1 << 20, "{} bytes", compressed.len());
    let before = peak_rss_bytes();
    // One part holds the whole compressed shard (the worst case), and the
    // member limit is 64 MiB (a quarter of a 256 MiB budget).
    let err = parse_shard_bytes("s3://b/bomb.tar.zst", Bytes::from(compressed), 8 << 20, 64 << 20)
        .expect_err("a 1 GiB member over a 64 MiB limit");
    assert!(matches!(err, ShardError::MemberTooLarge { size, .. } if size == 1 << 30), "{err}");
    let grown = peak_rss_bytes().saturating_sub(before);
    // Decompressing the part first took the whole GiB.
    assert!(grown < 64 << 20, "peak RSS grew by {} MiB", grown >> 20);
}
