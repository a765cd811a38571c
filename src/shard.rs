//! `shard`: WebDataset semantics over `.tar` and `.tar.zst` bytes.
//!
//! Parts of a shard are pushed in order; samples come out as keys and
//! fields whose bytes are slices of the parts ([`Blob`]), so parsing copies
//! nothing but the odd header that straddles two parts. zstd is recognised
//! by its magic number and decoded in a bounded window.
//!
//! Every error names the shard URL and the byte offset in the tar stream
//! (in the compressed stream for zstd errors).

mod blob;
mod sample_grouper;
mod shard_parser;
mod tar_header;
mod tar_stream;
mod zstd_stream;

pub use blob::Blob;
pub use sample_grouper::{Sample, SampleGrouper, is_shard_metadata, split_name};
pub use shard_parser::{ShardParser, parse_shard_bytes};
pub use tar_header::{BLOCK, EntryKind, Header, HeaderError, parse_header};
pub use tar_stream::{Member, TarStream};
pub use zstd_stream::{ZstdStream, is_zstd};

use crate::ErrorKind;

/// Errors in a shard's content.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard} is empty (0 bytes)")]
    Empty { shard: String },
    #[error("shard {shard} holds no samples")]
    NoSamples { shard: String },
    #[error("shard {shard} is not a tar archive (offset 0: {detail})")]
    NotTar { shard: String, detail: String },
    #[error("shard {shard} is corrupt at offset {offset}: {detail}")]
    Corrupt { shard: String, offset: u64, detail: String },
    #[error("shard {shard} is truncated at offset {offset}: {detail}")]
    Truncated { shard: String, offset: u64, detail: String },
    #[error("shard {shard} has corrupt zstd data at compressed offset {offset}: {detail}")]
    CorruptZstd { shard: String, offset: u64, detail: String },
    #[error(
        "shard {shard}: member '{member}' at offset {offset} is {size} bytes, more than the {limit}-byte \
         limit the memory budget allows (raise --memory-budget)"
    )]
    MemberTooLarge { shard: String, member: String, offset: u64, size: u64, limit: u64 },
    #[error("shard {shard}: sample '{key}' has field '{field}' twice (offset {offset})")]
    DuplicateField { shard: String, offset: u64, key: String, field: String },
}

impl ShardError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ShardError::MemberTooLarge { .. } => ErrorKind::ResourceExhausted,
            _ => ErrorKind::CorruptInput,
        }
    }
}
