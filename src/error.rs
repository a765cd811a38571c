//! The one top-level error, grouped by meaning.
//!
//! Each stage has its own `thiserror` enum with structured fields (which
//! shard, which offset); [`Error`] wraps them and [`Error::kind`] says what a
//! caller can do about it. The CLI prints the chain on one line; the gRPC
//! service (later) maps [`ErrorKind`] to a status code in one place.

use crate::fetch::FetchError;
use crate::shard::ShardError;
use crate::source::SourceError;

/// What went wrong, by what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input (URL, pattern, flag) is malformed.
    InvalidArgument,
    /// An object or bucket does not exist.
    NotFound,
    /// Credentials are missing or wrong.
    PermissionDenied,
    /// A shard is not a valid WebDataset shard (corrupt, truncated, empty).
    CorruptInput,
    /// The store kept failing after every retry (throttling, 5xx, resets).
    Unavailable,
    /// Something does not fit the memory budget.
    ResourceExhausted,
    /// The consumer went away.
    Cancelled,
    /// A bug or an unexpected local failure.
    Internal,
}

/// Every error stoker reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{what} does not fit the memory budget of {budget_bytes} bytes: {hint}")]
    OverBudget { what: String, budget_bytes: u64, hint: &'static str },
    #[error(
        "batch {index} of epoch {epoch} needs {batch_bytes} bytes, more than a ring slot \
         ({slot_bytes} bytes = ring_bytes / slots): raise ring_bytes or lower batch_size"
    )]
    RingSlotTooSmall { epoch: u64, index: u64, batch_bytes: u64, slot_bytes: u64 },
    #[error(
        "shard '{shard}' is not the version its index describes ({detail}): it changed after \
         this epoch was planned from the index; start again to index it anew"
    )]
    IndexMismatch { shard: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the pipeline stopped: {0}")]
    Cancelled(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Source(e) => e.kind(),
            Error::Fetch(e) => e.kind(),
            Error::Shard(e) => e.kind(),
            Error::OverBudget { .. } | Error::RingSlotTooSmall { .. } => {
                ErrorKind::ResourceExhausted
            }
            Error::IndexMismatch { .. } => ErrorKind::CorruptInput,
            Error::Config(_) => ErrorKind::InvalidArgument,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
