//! Deriving independent, reproducible random streams from one user seed.
//!
//! ChaCha8 is value-stable across `rand_chacha` versions, so the same seed
//! gives the same order after an upgrade; SplitMix64 mixes the inputs so
//! neighbouring seeds and epochs give unrelated streams.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable digest of byte strings (not `DefaultHasher`: what it names is
/// saved and read by later builds: resume tokens, index files). Each
/// string is taken 8 bytes at a time, then its length, so `"ab","c"` and
/// `"a","bc"` differ.
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Digest {
    pub fn new(seed: u64) -> Digest {
        Digest(seed)
    }

    pub fn eat(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix64(self.0 ^ u64::from_le_bytes(word));
        }
        self.0 = mix64(self.0 ^ bytes.len() as u64);
    }

    /// 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A random stream for `purpose` under `parts` (seed, epoch, rank…).
pub fn stream_rng(purpose: &str, parts: &[u64]) -> ChaCha8Rng {
    let mut h =
        mix64(purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }));
    for &p in parts {
        h = mix64(h ^ p);
    }
    ChaCha8Rng::seed_from_u64(h)
}
