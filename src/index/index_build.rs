//! Making sure every shard of a dataset has a fresh index: look each one up
//! (its current ETag and size from the listing or a HEAD), then read the
//! ones missing or stale whole, through the fetch engine, recording where
//! each sample begins.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::index_cache::{IndexCache, Lookup};
use super::shard_index::ShardIndex;
use crate::fetch::{FetchEngine, PartEvent, head_shard, spawn_shard_stream};
use crate::shard::ShardParser;
use crate::source::Dataset;
use crate::{Error, Result};

/// HEADs in flight while looking shards up.
const HEAD_PARALLEL: usize = 32;

/// What `ensure_index` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    pub shards: usize,
    /// Fresh indexes found in the cache.
    pub cached: usize,
    /// Shards read to index them (none before, or the one there refused).
    pub built: usize,
    /// Of `built`: an index was there but not used (shard changed, damaged).
    pub refused: usize,
    pub samples: u64,
}

/// A fresh index of every shard of `dataset`, in its order; shards without
/// one are read now (`refresh`: all of them).
pub async fn ensure_index(
    dataset: &Dataset,
    engine: &Arc<FetchEngine>,
    cache: &IndexCache,
    refresh: bool,
) -> Result<(Vec<Arc<ShardIndex>>, IndexReport)> {
    let mut report = IndexReport { shards: dataset.shards.len(), ..IndexReport::default() };
    // Each shard's version now; the first shard that cannot be looked up
    // ends it (a pattern naming a million missing shards must not cost a
    // million HEADs before its error).
    let versions: Vec<_> = futures::stream::iter(dataset.shards.iter().cloned())
        .map(|shard| {
            let engine = engine.clone();
            async move {
                let gate = engine.gate.as_deref();
                head_shard(engine.store.as_ref(), &shard, &engine.config, &engine.stats, gate).await
            }
        })
        .buffered(HEAD_PARALLEL)
        .try_collect()
        .await?;
    let mut found: Vec<Option<Arc<ShardIndex>>> = Vec::with_capacity(versions.len());
    let mut missing = Vec::new();
    for (i, version) in versions.into_iter().enumerate() {
        let (size, e_tag) = version;
        let url = &dataset.shards[i].url;
        match (refresh, cache.load(url, e_tag.as_deref(), size)) {
            (false, Lookup::Fresh(index)) => {
                report.cached += 1;
                found.push(Some(index));
                continue;
            }
            (_, Lookup::Refused(why)) => {
                tracing::info!(shard = %url, %why, "Index not used; the shard is read again.");
                report.refused += 1;
            }
            _ => {}
        }
        found.push(None);
        missing.push(i);
    }
    report.built = missing.len();
    if !missing.is_empty() {
        tracing::info!(shards = missing.len(), "Indexing shards (reading them whole).");
        let plan: Vec<_> = missing.iter().map(|&i| (i, dataset.shards[i].clone(), None)).collect();
        let events = spawn_shard_stream(engine.clone(), plan);
        let max_member = engine.budget.total_bytes() / 4;
        let built = tokio::task::spawn_blocking(move || index_shards(events, max_member))
            .await
            .map_err(|e| Error::Internal(format!("the indexing thread failed: {e}")))??;
        for (i, index) in built {
            let saved = cache.save(index.clone()).map(Some).unwrap_or_else(|e| {
                tracing::warn!(dir = %cache.dir().display(), error = %e, "Index not saved.");
                None
            });
            found[i] = Some(saved.unwrap_or_else(|| Arc::new(index)));
        }
    }
    let all: Option<Vec<_>> = found.into_iter().collect();
    let all = all.ok_or_else(|| Error::Internal("a shard was left unindexed".into()))?;
    report.samples = all.iter().map(|i| u64::from(i.count())).sum();
    Ok((all, report))
}

/// Parses the shards `events` brings, each into its index.
fn index_shards(
    mut events: tokio::sync::mpsc::Receiver<PartEvent<usize>>,
    max_member_bytes: u64,
) -> Result<Vec<(usize, ShardIndex)>> {
    /// The shard being read: its position, version and parser.
    struct Reading {
        i: usize,
        url: Arc<str>,
        e_tag: Option<Arc<str>>,
        size: u64,
        parser: ShardParser,
    }
    let mut out = Vec::new();
    let mut current: Option<Reading> = None;
    let mut starts = Vec::new();
    let mut samples = Vec::new();
    let take = |samples: &mut Vec<crate::shard::Sample>, starts: &mut Vec<u64>| {
        starts.extend(samples.drain(..).map(|s| s.offset));
    };
    while let Some(event) = events.blocking_recv() {
        match event {
            PartEvent::ShardStart { tag, shard, size, e_tag, .. } => {
                let url: Arc<str> = shard.url.as_str().into();
                let parser = ShardParser::new(url.clone(), max_member_bytes);
                current = Some(Reading { i: tag, url, e_tag, size, parser });
                starts.clear();
            }
            PartEvent::Part { data, .. } => {
                let part = data
                    .blocking_recv()
                    .map_err(|_| Error::Internal("a fetch task ended without a result".into()))??;
                let Some(Reading { parser, .. }) = current.as_mut() else {
                    return Err(Error::Internal("a part arrived outside a shard".into()));
                };
                for chunk in part.into_chunks() {
                    parser.push(chunk, &mut samples)?;
                    take(&mut samples, &mut starts);
                }
            }
            PartEvent::ShardEnd => {
                let Some(Reading { i, url, e_tag, size, parser }) = current.take() else {
                    return Err(Error::Internal("a shard ended that never started".into()));
                };
                let compressed = parser.compressed();
                parser.finish(&mut samples)?;
                take(&mut samples, &mut starts);
                let starts = std::mem::take(&mut starts);
                if starts.len() > super::MAX_SAMPLES {
                    return Err(Error::Config(format!(
                        "shard '{url}' has {} samples; an index holds at most {} (split the shard)",
                        starts.len(),
                        super::MAX_SAMPLES
                    )));
                }
                out.push((i, ShardIndex::new(&url, e_tag.as_deref(), size, compressed, starts)));
            }
            PartEvent::Failed(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
