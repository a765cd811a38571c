//! Turning a dataset URL into its ordered list of shard objects.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

use super::brace::{expand_braces, has_braces};
use super::{DatasetUrl, SourceError, chain, classify, noting_retry_after};
use crate::fetch::{FetchConfig, FetchStats, RateGate, RetryLoop};

/// One shard object. Size and ETag are known when the shard came from a
/// listing; the fetch engine asks the store (HEAD) otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRef {
    /// The shard's full URL, for messages and sample provenance.
    pub url: String,
    pub path: Path,
    pub size: Option<u64>,
    pub e_tag: Option<String>,
}

/// Whether an object name is a WebDataset shard we can read.
pub fn is_shard_name(key: &str) -> bool {
    key.ends_with(".tar") || key.ends_with(".tar.zst") || key.ends_with(".tzst")
}

/// The shards `url` names: a brace pattern in the order written, a single
/// shard, or every shard below a prefix in lexical order (a listing,
/// retried as `retry` says, as every store call is).
pub async fn resolve_shards(
    url: &DatasetUrl,
    store: &dyn ObjectStore,
    retry: &FetchConfig,
) -> Result<Vec<Arc<ShardRef>>, SourceError> {
    let key = url.key.as_str();
    let shards = if has_braces(key) {
        // Up to a million names, a second of CPU: off the async workers.
        let url = url.clone();
        tokio::task::spawn_blocking(move || expand_pattern(&url)).await.map_err(|e| {
            SourceError::BadPattern {
                pattern: String::new(),
                reason: format!("expanding the pattern failed: {e}"),
            }
        })??
    } else if !key.is_empty() && !key.ends_with('/') && is_shard_name(key) {
        vec![Arc::new(ShardRef {
            url: url.to_url(),
            path: parse_key(url, key)?,
            size: None,
            e_tag: None,
        })]
    } else {
        list_retrying(url, store, retry).await?
    };
    if shards.is_empty() {
        return Err(SourceError::NoShards { url: url.to_url() });
    }
    Ok(shards)
}

/// The shards a brace pattern names, in the order written.
fn expand_pattern(url: &DatasetUrl) -> Result<Vec<Arc<ShardRef>>, SourceError> {
    let expanded = expand_braces(&url.key).map_err(|e| match e {
        SourceError::BadPattern { reason, .. } => {
            SourceError::BadPattern { pattern: crate::echo::redacted_url(&url.to_url()), reason }
        }
        other => other,
    })?;
    expanded
        .into_iter()
        .map(|key| {
            Ok(Arc::new(ShardRef {
                url: url.object_url(&key),
                path: parse_key(url, &key)?,
                size: None,
                e_tag: None,
            }))
        })
        .collect()
}

fn parse_key(url: &DatasetUrl, key: &str) -> Result<Path, SourceError> {
    let bad = |reason: String| SourceError::BadUrl {
        url: crate::echo::redacted_url(&url.object_url(key)),
        reason,
    };
    if key.len() > url.max_key_bytes() {
        let (len, max) = (key.len(), url.max_key_bytes());
        return Err(bad(format!("the object key is {len} bytes, more than the store's {max}")));
    }
    Path::parse(key).map_err(|e| {
        bad(format!("invalid object key: {}", crate::echo::bounded(&e.to_string(), 256)))
    })
}

/// Lists `url`'s prefix, retrying transient failures (a whole listing
/// again: pages are cheap next to an outage) on the endpoint's gate.
async fn list_retrying(
    url: &DatasetUrl,
    store: &dyn ObjectStore,
    cfg: &FetchConfig,
) -> Result<Vec<Arc<ShardRef>>, SourceError> {
    let gate = cfg.rate_limit.then(|| RateGate::for_endpoint(&url.endpoint()));
    let stats = FetchStats::default();
    let mut retry = RetryLoop::new(cfg, gate.as_deref(), &stats);
    loop {
        retry.begin().await;
        let (listed, asked) = noting_retry_after(list_prefix(url, store)).await;
        let e = match listed {
            Err(SourceError::List { source, .. }) if classify(&source).transient => source,
            done => {
                if let (Ok(_), Some(gate)) = (&done, &gate) {
                    gate.on_success();
                }
                return done;
            }
        };
        if classify(&e).throttled {
            retry.throttled(asked);
        }
        match retry.wait(asked).await {
            Ok(delay) => {
                tracing::debug!(url = %url.to_url(), ?delay, error = %chain(&e), "Retried a listing.");
            }
            Err(why) => {
                return Err(SourceError::ListUnavailable {
                    url: url.to_url(),
                    attempts: retry.attempts(),
                    detail: format!("{}; {why}", chain(&e)),
                });
            }
        }
    }
}

async fn list_prefix(
    url: &DatasetUrl,
    store: &dyn ObjectStore,
) -> Result<Vec<Arc<ShardRef>>, SourceError> {
    let prefix = parse_key(url, url.key.trim_end_matches('/'))?;
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    let mut metas: Vec<_> = store
        .list(prefix.as_ref())
        .try_filter(|m| futures::future::ready(is_shard_name(m.location.as_ref())))
        // One more than allowed tells that there are too many.
        .take(super::brace::MAX_EXPANSION + 1)
        .try_collect()
        .await
        .map_err(|source| SourceError::List { url: url.to_url(), source })?;
    if metas.len() > super::brace::MAX_EXPANSION {
        return Err(SourceError::BadPattern {
            pattern: crate::echo::redacted_url(&url.to_url()),
            reason: format!(
                "more than {} shards below this prefix: name a narrower one",
                super::brace::MAX_EXPANSION
            ),
        });
    }
    metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    Ok(metas
        .into_iter()
        .map(|m| {
            Arc::new(ShardRef {
                url: url.object_url(m.location.as_ref()),
                path: m.location,
                size: Some(m.size),
                e_tag: m.e_tag,
            })
        })
        .collect())
}
