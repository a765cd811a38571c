//! `order`: the epoch plan. Which shards each rank reads, in which order,
//! and the seeded sample shuffle — all functions of `(seed, epoch, rank)`
//! and the data, never of network timing.

mod epoch_plan;
mod even_plan;
pub mod reshard;
mod run_plan;
mod seed;
mod shuffle_buffer;

pub use epoch_plan::{OrderConfig, plan_shards, shard_order};
pub use even_plan::{Even, EvenTally, even_tally, plan_samples, share_by_samples};
pub use run_plan::{RunEntry, RunPlan};
pub use seed::{Digest, mix64, stream_rng};
pub use shuffle_buffer::ShuffleBuffer;
