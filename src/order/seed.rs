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
