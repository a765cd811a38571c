//! `source`: a dataset URL becomes an object store and an ordered list of
//! shard objects on it.
//!
//! ```text
//!  "s3://bucket/train/shard-{000..511}.tar"
//!      │ DatasetUrl::parse         (scheme, bucket, raw key)
//!      │ open_store                (env credentials + --store-opt, no retries below us)
//!      ▼ resolve_shards            (brace expansion, or a sorted prefix listing)
//!  Dataset { store, shards: [ShardRef; 512] }
//! ```

mod brace;
mod dataset_url;
mod emulated_store;
mod intercepted_store;
mod retry_after;
mod shard_list;
mod store_error;
mod store_open;

use std::sync::Arc;

use object_store::ObjectStore;

pub use brace::{expand_braces, has_braces};
pub use dataset_url::{DatasetUrl, Scheme};
pub use emulated_store::{EmulatedStore, RemoteProfile};
pub use intercepted_store::{GetInterceptor, InterceptedStore};
pub use retry_after::{MAX_RETRY_AFTER, noting_retry_after};
pub use shard_list::{ShardRef, is_shard_name, resolve_shards};
pub use store_error::{StoreFailure, chain, classify};
pub use store_open::{StoreOptions, open_store, s3_endpoint};

use crate::ErrorKind;

/// Errors while turning a URL into shards.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad dataset URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("bad shard pattern '{pattern}': {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("bad store option '{key}': {reason}")]
    BadOption { key: String, reason: String },
    #[error("cannot open the store for '{url}': {}", chain(source))]
    Store { url: String, source: object_store::Error },
    #[error("cannot list '{url}': {}", chain(source))]
    List { url: String, source: object_store::Error },
    #[error("cannot list '{url}' after {attempts} attempt(s): {detail}")]
    ListUnavailable { url: String, attempts: u32, detail: String },
    #[error("no .tar or .tar.zst shards at '{url}'")]
    NoShards { url: String },
}

impl SourceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::BadUrl { .. }
            | SourceError::BadPattern { .. }
            | SourceError::BadOption { .. } => ErrorKind::InvalidArgument,
            SourceError::Store { source, .. } | SourceError::List { source, .. } => {
                classify(source).kind
            }
            SourceError::ListUnavailable { .. } => ErrorKind::Unavailable,
            SourceError::NoShards { .. } => ErrorKind::NotFound,
        }
    }
}

/// A resolved dataset: where it lives and which shards it has.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub url: DatasetUrl,
    pub store: Arc<dyn ObjectStore>,
    /// Shared: the daemon's sessions on one dataset hold one list.
    pub shards: Arc<[Arc<ShardRef>]>,
}

impl Dataset {
    /// Parses `url`, opens its store and lists its shards (retried as the
    /// default fetch settings say).
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Dataset, SourceError> {
        Self::open_with(url, opts, &crate::fetch::FetchConfig::default()).await
    }

    /// As [`Dataset::open`], retrying the listing as `retry` says.
    pub async fn open_with(
        url: &str,
        opts: &StoreOptions,
        retry: &crate::fetch::FetchConfig,
    ) -> Result<Dataset, SourceError> {
        let url = DatasetUrl::parse(url)?;
        let store = open_store(&url, opts)?;
        let shards = resolve_shards(&url, store.as_ref(), retry).await?;
        Ok(Dataset { url, store, shards: shards.into() })
    }
}
