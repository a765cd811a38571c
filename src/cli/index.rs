//! `stoker index URL`: make sure every shard of a dataset has a fresh index
//! (its sample count and where each sample begins), reading the shards that
//! have none or a stale one. `bench` and the daemon build the same index as
//! they need it; this does it ahead of a job, once per node.

use anyhow::Context;
use clap::Args;

use super::fetch_args::FetchArgs;
use crate::fetch::FetchEngine;
use crate::index::{IndexCache, ensure_index};
use crate::source::{Dataset, StoreOptions};

/// Flags of `stoker index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Dataset: the same URL forms as `bench` (pattern, prefix or shard).
    pub url: String,
    /// Read every shard again, even those with a fresh index.
    #[arg(long)]
    pub refresh: bool,
    /// The index directory [default: $XDG_CACHE_HOME/stoker/index, or
    /// STOKER_INDEX_CACHE].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a line for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// object_store option KEY=VALUE (e.g. aws_endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(long = "store-opt", value_parser = super::parse_store_opt)]
    pub store_opts: Vec<(String, String)>,
}

pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    let cache = match &args.dir {
        Some(dir) => IndexCache::at(dir),
        None => IndexCache::default_location()
            .context("no index directory: set --dir, STOKER_INDEX_CACHE, XDG_CACHE_HOME or HOME")?,
    };
    let fetch = args.fetch.config();
    fetch.validate()?;
    let opts = StoreOptions { options: args.store_opts.clone() };
    let dataset = Dataset::open_with(&args.url, &opts, &fetch).await?;
    let engine = FetchEngine::for_endpoint(dataset.store.clone(), fetch, &dataset.url.endpoint());
    let started = std::time::Instant::now();
    let (_, report) = ensure_index(&dataset, &engine, &cache, args.refresh).await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let dir = cache.dir().display().to_string();
        let out = serde_json::json!({ "index": report, "dir": dir, "seconds": seconds });
        println!("{out}");
    } else {
        println!(
            "{} shards, {} samples: {} indexed already, {} read now ({} had an index not used) \
             in {seconds:.2} s; index in {}",
            report.shards,
            report.samples,
            report.cached,
            report.built,
            report.refused,
            cache.dir().display()
        );
    }
    Ok(())
}
