//! Any bytes as a shard (plain tar or tar.zst, recognised from the bytes),
//! split into parts of several sizes: a named error or samples, never a
//! panic, a hang or unbounded memory (members over 1 MiB are refused).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let mut outcomes = Vec::new();
    for part in [7, 512, 4096, 1 << 20] {
        let parsed = stoker::shard::parse_shard_bytes("fuzz", bytes.clone(), part, 1 << 20);
        outcomes.push(parsed.map(|samples| samples.len()).map_err(|e| e.to_string()));
    }
    // Where the parts split must not change what the shard holds.
    assert!(outcomes.windows(2).all(|w| w[0].is_ok() == w[1].is_ok()), "{outcomes:?}");
});
