//! `stoker gen URL`: write a synthetic WebDataset.

use clap::Args;

use super::size_arg::{human_bytes, parse_bytes};
use crate::source::StoreOptions;
use crate::synth::{SynthConfig, write_dataset};

/// Flags of `stoker gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Where to write: a prefix such as s3://bucket/synth/, file:///data/synth/ or ./synth/.
    pub url: String,
    /// Number of shards.
    #[arg(long, default_value_t = 32)]
    pub shards: usize,
    /// Payload bytes per shard (samples are added until it is reached).
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    pub shard_bytes: u64,
    /// Mean size of a sample's first field (sizes vary ±50%).
    #[arg(long, default_value = "128KiB", value_parser = parse_bytes)]
    pub sample_bytes: u64,
    /// Fields (file extensions) of each sample; the first carries the bulk.
    #[arg(long, value_delimiter = ',', default_value = "bin,cls,json")]
    pub fields: Vec<String>,
    /// Write .tar.zst shards.
    #[arg(long)]
    pub zstd: bool,
    /// zstd compression level.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Seed of the content: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// object_store option KEY=VALUE (e.g. aws_endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(long = "store-opt", value_parser = super::parse_store_opt)]
    pub store_opts: Vec<(String, String)>,
}

impl GenArgs {
    pub fn synth_config(&self) -> SynthConfig {
        SynthConfig {
            shards: self.shards,
            shard_bytes: self.shard_bytes,
            sample_bytes: self.sample_bytes,
            fields: self.fields.clone(),
            zstd: self.zstd,
            zstd_level: self.zstd_level,
            seed: self.seed,
        }
    }
}

pub async fn run(args: GenArgs) -> anyhow::Result<()> {
    let cfg = args.synth_config();
    let opts = StoreOptions { options: args.store_opts.clone() };
    let started = std::time::Instant::now();
    let summary = write_dataset(&args.url, &opts, &cfg).await?;
    println!(
        "wrote {} shards, {} samples, {} to {} in {:.1} s",
        summary.shards,
        summary.samples,
        human_bytes(summary.bytes as f64),
        args.url,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
