//! stoker keeps GPUs fed: it streams WebDataset shards (`.tar`, `.tar.zst`)
//! from object storage with parallel range-GETs and collates them into ready
//! batches.
//!
//! The data path runs in one direction (see `DESIGN.md`):
//!
//! ```text
//!  object store ─range GETs─▶ fetch ─parts─▶ shard ─samples─▶ order ─▶ batch
//!  (source)                  (budget,       (tar, zstd)      (plan,    (collate)
//!                             permits)                        shuffle)
//! ```
//!
//! [`pipeline::Pipeline`] wires the stages; the `stoker` binary (`cli`) runs
//! them as `stoker bench` and writes test sets with `stoker gen`.

pub mod alloc_trim;
pub mod autotune;
pub mod batch;
pub mod cache_dir;
pub mod cli;
pub mod echo;
pub mod error;
pub mod fetch;
pub mod gpu;
pub mod index;
pub mod metrics;
pub mod order;
pub mod pipeline;
pub mod ring;
pub mod serve;
pub mod shard;
pub mod source;
pub mod synth;

pub use error::{Error, ErrorKind, Result};
