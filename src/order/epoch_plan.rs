//! Which shards a rank reads in an epoch, and in what order.
//!
//! ```text
//!  shards 0..n ──shuffle(seed, epoch)──▶ [7 2 9 0 4 …] ──stride──▶ rank r: positions r, r+W, r+2W, …
//! ```
//!
//! Every rank computes the same shuffled list from `(seed, epoch)` alone, so
//! no coordination is needed and each shard (hence each sample) goes to
//! exactly one rank. The stride, as webdataset's `split_by_node`, keeps the
//! shard counts of ranks within one of each other.

use rand::seq::SliceRandom;

use super::seed::stream_rng;
use crate::Error;

/// Order settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderConfig {
    /// 0: any fixed seed gives a reproducible run; users pass their own.
    pub seed: u64,
    /// The first epoch to run.
    pub epoch: u64,
    pub rank: usize,
    /// 1: a single process reads everything.
    pub world_size: usize,
    /// Shuffle the shard order each epoch (on by default, as in training).
    pub shuffle_shards: bool,
    /// Samples held for the sample shuffle; 0 or 1 turns it off.
    pub shuffle_buffer: usize,
}

impl Default for OrderConfig {
    fn default() -> Self {
        OrderConfig {
            seed: 0,
            epoch: 0,
            rank: 0,
            world_size: 1,
            shuffle_shards: true,
            shuffle_buffer: 0,
        }
    }
}

impl OrderConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.world_size == 0 {
            return Err(Error::Config("--world-size must be at least 1".into()));
        }
        if self.rank >= self.world_size {
            return Err(Error::Config(format!(
                "--rank {} is out of range for --world-size {} (ranks are 0..{})",
                self.rank, self.world_size, self.world_size
            )));
        }
        Ok(())
    }
}

/// Every shard index in `epoch`'s order, the same on every rank.
pub fn shard_order(num_shards: usize, epoch: u64, cfg: &OrderConfig) -> Vec<usize> {
    let mut order: Vec<usize> = (0..num_shards).collect();
    if cfg.shuffle_shards {
        order.shuffle(&mut stream_rng("shards", &[cfg.seed, epoch]));
    }
    order
}

/// The shard indices (into the dataset's list) that `cfg.rank` reads in
/// `epoch`, in reading order.
pub fn plan_shards(num_shards: usize, epoch: u64, cfg: &OrderConfig) -> Vec<usize> {
    let order = shard_order(num_shards, epoch, cfg);
    order.into_iter().skip(cfg.rank).step_by(cfg.world_size.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_shard_goes_to_exactly_one_rank(n in 0usize..300, world in 1usize..9, seed: u64, epoch in 0u64..5) {
            let mut seen = vec![0u32; n];
            for rank in 0..world {
                let cfg = OrderConfig { seed, rank, world_size: world, ..OrderConfig::default() };
                for s in plan_shards(n, epoch, &cfg) {
                    seen[s] += 1;
                }
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn same_seed_same_order_other_epoch_other_order() {
        let cfg = OrderConfig { seed: 7, ..OrderConfig::default() };
        assert_eq!(plan_shards(100, 3, &cfg), plan_shards(100, 3, &cfg));
        assert_ne!(plan_shards(100, 3, &cfg), plan_shards(100, 4, &cfg));
        let plain = OrderConfig { shuffle_shards: false, ..cfg };
        assert_eq!(plan_shards(5, 3, &plain), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_rank_is_an_error() {
        let cfg = OrderConfig { rank: 2, world_size: 2, ..OrderConfig::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("--rank 2"));
    }
}
