//! Whether a run splits its epochs by samples, and the index that takes:
//! when `--even` is given, or when there are more ranks than shards (a
//! split by shards would leave ranks with nothing).

use std::sync::Arc;

use super::{IndexCache, IndexReport, ensure_index};
use crate::fetch::FetchEngine;
use crate::order::{Even, EvenTally, OrderConfig, even_tally};
use crate::pipeline::SampleSplit;
use crate::source::Dataset;

/// What a run split by samples reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitReport {
    pub even: Even,
    /// Per epoch, for this rank.
    pub per_epoch: EvenTally,
    pub index: IndexReport,
    /// Where the index lives (empty: not kept).
    pub index_dir: String,
}

/// Parses `--even`.
pub fn parse_even(text: &str) -> Result<Even, String> {
    text.parse()
}

/// Whether `order` over `shards` needs a split by samples.
pub fn needs_split(even: Option<Even>, order: &OrderConfig, shards: usize) -> bool {
    even.is_some() || order.world_size > shards
}

/// The split, indexing what is not indexed yet; `None` when the run splits
/// by whole shards.
pub async fn sample_split(
    dataset: &Dataset,
    engine: &Arc<FetchEngine>,
    cache: &IndexCache,
    order: &OrderConfig,
    even: Option<Even>,
) -> crate::Result<Option<(SampleSplit, SplitReport)>> {
    if !needs_split(even, order, dataset.shards.len()) {
        return Ok(None);
    }
    let (index, report) = ensure_index(dataset, engine, cache, false).await?;
    if report.built > 0 {
        tracing::info!(
            built = report.built,
            cached = report.cached,
            "Indexed shards to split epochs by samples."
        );
    }
    let even = even.unwrap_or_default();
    let split = SampleSplit { index: index.into(), even };
    let per_epoch = even_tally(&split.counts(), order, even);
    let report = SplitReport {
        even,
        per_epoch,
        index: report,
        index_dir: cache.dir().display().to_string(),
    };
    Ok(Some((split, report)))
}
