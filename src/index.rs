//! `index`: where each sample of a shard begins, and how many a shard has.
//!
//! ```text
//!  first read of a shard ──sample offsets──▶ ShardIndex ──▶ IndexCache (a file per shard, keyed by URL,
//!  (a by-product of parsing)                 (ETag, size)                 valid only for its ETag and size)
//!  `stoker index URL` ──reads the shards not indexed yet──▶ same
//! ```
//!
//! The counts let every rank of an epoch compute the same split by sample
//! ranges (`order::even_plan`) with no coordinator; the offsets let a
//! reader start a plain `.tar` at a sample instead of at byte 0. An index
//! is outside input like any file: checked (digest, ETag, size, offsets in
//! order and in range) before it is used, and rebuilt when it is not right.

mod index_build;
mod index_cache;
mod sample_split;
mod shard_index;

pub use index_build::{IndexReport, ensure_index};
pub use index_cache::{IndexCache, Lookup};
pub use sample_split::{SplitReport, needs_split, parse_even, sample_split};
pub use shard_index::{IndexError, MAX_SAMPLES, ShardIndex};
