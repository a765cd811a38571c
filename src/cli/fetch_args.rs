//! The fetch engine's flags, shared by `bench` and `serve`.

use clap::Args;

use super::size_arg::parse_bytes;
use crate::fetch::FetchConfig;

/// `--concurrency`, `--part-bytes`, `--memory-budget`, `--outage-tolerance`,
/// `--no-hedge`.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Range-GET requests in flight (per endpoint): `auto` lets the
    /// autotuner choose from what it measures; a number pins it. Above 32,
    /// the first 32 open at once and the rest in doubling cohorts as
    /// replies start (many slow starts at once can swamp a node).
    #[arg(long, default_value = "auto", value_parser = parse_concurrency)]
    pub concurrency: ConcurrencyArg,
    /// Size of each range GET; pins it [default: 8MiB, the AWS CRT default, then
    /// autotuned: doubled while the store's request rate is the limit]. A
    /// stream's first two parts' worth go in quarter parts (at least 1 MiB),
    /// for a sooner first batch.
    #[arg(long, value_parser = parse_bytes)]
    pub part_bytes: Option<u64>,
    /// Memory for fetched bytes not yet batched (the daemon: shared by every
    /// session) [default: 1GiB].
    #[arg(long, value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Seconds a request may go without progress (every attempt failing:
    /// an outage, a SlowDown storm) before it fails with a named error.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub outage_tolerance: f64,
    /// Never race a slow part with a second request (by default the part
    /// that holds up the others, once late, is raced on a fresh connection).
    #[arg(long)]
    pub no_hedge: bool,
}

/// `--concurrency`: `auto` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyArg {
    Auto,
    Fixed(usize),
}

pub fn parse_concurrency(text: &str) -> Result<ConcurrencyArg, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(ConcurrencyArg::Auto);
    }
    match text.parse::<usize>() {
        Ok(0) => Err("--concurrency must be at least 1 (or auto)".into()),
        Ok(n) => Ok(ConcurrencyArg::Fixed(n)),
        Err(_) => Err(format!("'{text}' is neither 'auto' nor a number")),
    }
}

impl FetchArgs {
    /// The engine settings these flags ask for.
    pub fn config(&self) -> FetchConfig {
        let defaults = FetchConfig::default();
        let auto = self.concurrency == ConcurrencyArg::Auto;
        FetchConfig {
            concurrency: match self.concurrency {
                ConcurrencyArg::Fixed(n) => n,
                ConcurrencyArg::Auto => defaults.concurrency,
            },
            auto_concurrency: auto,
            part_bytes: self.part_bytes.unwrap_or(defaults.part_bytes),
            auto_part_bytes: self.part_bytes.is_none() && auto,
            memory_budget_bytes: self.memory_budget.unwrap_or(defaults.memory_budget_bytes),
            // A day at most; NaN or below zero: no tolerance at all.
            outage_tolerance: std::time::Duration::from_secs_f64(
                if self.outage_tolerance.is_nan() {
                    0.0
                } else {
                    self.outage_tolerance.clamp(0.0, 86_400.0)
                },
            ),
            hedge: !self.no_hedge,
            ..defaults
        }
    }
}
