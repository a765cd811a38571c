//! The `stoker` command line: `bench`, `gen` and `serve`.
//! Flags, progress and reports live here; the work is in the library.

pub mod bench;
pub mod bench_consumer;
pub mod bench_gpu;
pub mod config_file;
pub mod epoch_boundary;
pub mod fetch_args;
pub mod generate;
pub mod index;
pub mod plot;
pub mod report;
pub mod serve;
pub mod size_arg;
pub mod tuning_cache;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// stoker keeps GPUs fed: it streams WebDataset shards (.tar, .tar.zst) from
/// object storage (S3, GCS, Azure, HTTP, local files) with parallel range-GETs
/// and hands out ready batches.
///
/// Credentials and endpoints come from the usual environment: AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, web
/// identity (AWS_WEB_IDENTITY_TOKEN_FILE), GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_*;
/// or from --store-opt KEY=VALUE. Logs: STOKER_LOG=info (or debug).
#[derive(Debug, Parser)]
#[command(name = "stoker", version, about, long_about)]
pub struct Cli {
    /// Log lines as text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value = "text", env = "STOKER_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure what a dataset can deliver: fetch, parse and batch it, then report.
    ///
    /// With no URL, generates a 1 GiB synthetic dataset (32 shards) in a
    /// temporary directory and benchmarks that: the embedded default.
    Bench(bench::BenchArgs),
    /// Write a synthetic WebDataset (deterministic from --seed) to any store.
    Gen(generate::GenArgs),
    /// Run the node daemon: trainer ranks open sessions over a Unix socket
    /// and receive batches in shared memory (see docs/CLIENT.md).
    Serve(serve::ServeArgs),
    /// Index a dataset's shards (sample counts and offsets) ahead of a job:
    /// what splitting epochs by samples (--even) needs; read once, kept in
    /// the index cache, rebuilt when a shard changes.
    Index(index::IndexArgs),
    /// The daemon's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the settings `stoker serve` would run with (same flags,
    /// environment and --config file) and where each came from.
    Show(serve::ServeArgs),
}

/// Parses `KEY=VALUE`.
pub fn parse_store_opt(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got '{text}'"))
}

/// Logs go to stderr through `tracing`, filtered by STOKER_LOG (default:
/// warnings; the daemon also says what it serves, sessions opening and
/// closing, and draining).
fn init_logging(format: LogFormat, daemon: bool) {
    let default = if daemon { "warn,stoker=info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `stoker config show`: one row per setting.
fn show_config(
    root: &clap::Command,
    matches: &clap::ArgMatches,
    added: &config_file::Added,
) -> ExitCode {
    let show = root
        .find_subcommand("config")
        .and_then(|c| c.find_subcommand("show"))
        .zip(matches.subcommand_matches("config").and_then(|m| m.subcommand_matches("show")));
    let Some((cmd, m)) = show else { return ExitCode::FAILURE };
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["setting", "value", "from"]);
    for (name, value, source) in config_file::effective(cmd, m, added) {
        table.add_row([name, value, source.name().to_string()]);
    }
    println!("{table}");
    ExitCode::SUCCESS
}

/// Runs the CLI; the exit code is 0 on success, 2 for bad input, 1 otherwise.
pub fn main() -> ExitCode {
    let root = Cli::command();
    let env = |k: &str| std::env::var(k).ok();
    let (argv, added) = match config_file::apply(std::env::args_os().collect(), &root, &env) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let matches = match root.clone().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            // A bad value from the file or the environment: say where it
            // came from, not only which flag it stands for.
            if let Some(why) = config_file::origin_of(&e, &root, &added) {
                let _ = e.print();
                eprintln!("note: {why}");
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Config(ConfigCommand::Show(_)) = &cli.command {
        return show_config(&root, &matches, &added);
    }
    let daemon = matches!(cli.command, Command::Serve(_));
    init_logging(cli.log_format, daemon);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stoker-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Gen(args) => generate::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Index(args) => index::run(args).await,
            Command::Config(_) => Ok(()),
        }
    });
    // Do not wait for stray fetch tasks after an early stop.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if daemon {
                // The daemon's log may be JSON: its last word is a log line too.
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            let kind = e
                .downcast_ref::<crate::Error>()
                .map(crate::Error::kind)
                .or_else(|| e.downcast_ref::<crate::source::SourceError>().map(|e| e.kind()));
            // `--gpu` on a machine without CUDA (or that device) is a usage
            // error, like a bad flag: exit 2.
            let no_gpu = matches!(
                e.downcast_ref::<crate::gpu::GpuError>(),
                Some(
                    crate::gpu::GpuError::NoCuda { .. } | crate::gpu::GpuError::NoSuchDevice { .. }
                )
            );
            let usage = no_gpu || kind == Some(crate::ErrorKind::InvalidArgument);
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
