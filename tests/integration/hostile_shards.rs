//! Hostile shards: a `.tar.zst` bomb (a few KB of zstd holding a 1 GiB
//! member of zeros), PAX records that lie about sizes, headers that claim
//! more than the shard holds, and member names that look like paths out of
//! a directory. Each is a named error with its shard and offset, refused at
//! the header (before its bytes are read or any buffer for them is made,
//! for the bomb with memory for a chunk, not for the part's whole output),
//! plain and zstd-compressed; names are keys, never paths. Its own test
//! binary (its own process), so the peak RSS it reads is its own.

use std::io::Write;

use bytes::Bytes;
use stoker::shard::{ShardError, parse_shard_bytes};

const MIB: u64 = 1 << 20;

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

/// A ustar header for `name` (written raw: the tar crate refuses `..`)
/// of `kind` claiming `size` bytes.
fn header(name: &str, kind: tar::EntryType, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    let bytes = h.as_mut_bytes();
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    *h.as_bytes()
}

/// A PAX record, `"<len> key=value\n"`, its length counting itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A PAX extended header carrying `records`, then a file header for
/// `name` whose own size field says `size`.
fn pax_then_file(records: &str, name: &str, size: u64) -> Vec<u8> {
    let mut out = header("PaxHeaders/x", tar::EntryType::XHeader, records.len() as u64).to_vec();
    out.extend_from_slice(records.as_bytes());
    pad(&mut out);
    out.extend_from_slice(&header(name, tar::EntryType::Regular, size));
    out
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.write_all(bytes).expect("write");
    enc.finish().expect("finish")
}

/// Parses `bytes` as `name` (plain, and zstd-compressed as `name.zst`)
/// with a 64 MiB member limit in 1 MiB parts; the error of each, and
/// what peak RSS grew by over both.
fn parse_both(name: &str, bytes: &[u8]) -> (ShardError, ShardError, u64) {
    let before = peak_rss_bytes();
    let plain = parse_shard_bytes(name, Bytes::from(bytes.to_vec()), MIB as usize, 64 * MIB)
        .expect_err("plain");
    let zst = format!("{name}.zst");
    let packed = parse_shard_bytes(&zst, Bytes::from(zstd(bytes)), MIB as usize, 64 * MIB)
        .expect_err("zstd");
    (plain, packed, peak_rss_bytes().saturating_sub(before))
}

/// A PAX `size=` record claiming a terabyte for a member whose own header
/// says 0 (tar and Python's tarfile honour the record): refused at the
/// header with the record's size, not read as an empty member.
#[test]
fn a_pax_size_record_claiming_a_terabyte_is_refused_at_the_header() {
    let tb = 1u64 << 40;
    let shard = pax_then_file(&pax_record("size", &tb.to_string()), "sample0.bin", 0);
    let (plain, packed, grown) = parse_both("s3://b/pax-bomb.tar", &shard);
    for err in [&plain, &packed] {
        assert!(
            matches!(err, ShardError::MemberTooLarge { size, member, offset: 1024, .. }
                if *size == tb && member == "sample0.bin"),
            "{err}"
        );
        assert!(err.to_string().contains("pax-bomb.tar"), "names the shard: {err}");
    }
    assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown >> 20);
}

/// A PAX header claiming 1 GiB of records is refused before a byte of it
/// is read or a buffer for it made (the records of a real shard are a few
/// hundred bytes).
#[test]
fn an_extended_header_claiming_a_gigabyte_is_refused_before_it_is_read() {
    let shard = header("PaxHeaders/x", tar::EntryType::XHeader, 1 << 30).to_vec();
    let (plain, packed, grown) = parse_both("s3://b/pax-huge.tar", &shard);
    for err in [&plain, &packed] {
        assert!(
            matches!(err, ShardError::Corrupt { offset: 0, detail, .. }
                if detail.contains("1073741824-byte") && detail.contains("PAX")),
            "{err}"
        );
    }
    assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown >> 20);
}

/// A header that says 48 MiB where the shard ends after 1 KiB: truncated,
/// naming the member and how much of it is missing (within the member
/// limit, so the parser starts on it; its blob grows only as bytes come).
#[test]
fn a_member_longer_than_its_shard_is_truncated_with_what_is_missing() {
    let mut shard = header("sample0.bin", tar::EntryType::Regular, 48 * MIB).to_vec();
    shard.extend_from_slice(&[7u8; 1024]);
    let (plain, packed, grown) = parse_both("s3://b/short.tar", &shard);
    let missing = (48 * MIB - 1024).to_string();
    for err in [&plain, &packed] {
        assert!(
            matches!(err, ShardError::Truncated { detail, .. }
                if detail.contains("sample0.bin") && detail.contains(&missing)),
            "{err}"
        );
    }
    assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown >> 20);
}

/// Names that would leave a directory (`../`, absolute) are keys, as
/// webdataset makes them: stoker never uses a member name as a path, so
/// there is nothing to escape from, and a key is returned as it was written.
#[test]
fn names_that_look_like_escaping_paths_are_keys_never_paths() {
    let names = ["../../etc/passwd.txt", "/etc/shadow.txt", "a/../../b.txt"];
    let mut shard = Vec::new();
    for name in names {
        shard.extend_from_slice(&header(name, tar::EntryType::Regular, 3));
        shard.extend_from_slice(b"abc");
        pad(&mut shard);
    }
    shard.extend_from_slice(&[0u8; 1024]);
    let samples = parse_shard_bytes("s3://b/names.tar", Bytes::from(shard), 512, MIB)
        .expect("names are data");
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["../../etc/passwd", "/etc/shadow", "a/../../b"]);
    for s in &samples {
        assert_eq!(
            s.field("txt").map(|b| b.to_bytes()),
            Some(Bytes::from_static(b"abc")),
            "{}",
            s.key
        );
    }
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
