//! The `stoker` binary as a user runs it: help, gen, bench --json,
//! --keys-out partitioning, the embedded default, and clear errors.

use crate::support;

use std::collections::HashSet;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

/// Each run gets a tuning cache of its own: runs must not warm-start from
/// each other (see `a_second_run_starts_from_the_tuning_cache`).
fn stoker(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("temp dir");
    stoker_with_cache(args, &cache.path().join("tuning.json"))
}

fn stoker_with_cache(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stoker"))
        .args(args)
        .env("STOKER_LOG", "warn")
        .env("STOKER_TUNING_CACHE", cache)
        // Shard indexes beside it: runs index for themselves.
        .env("STOKER_INDEX_CACHE", cache.with_extension("index"))
        .output()
        .expect("run stoker")
}

fn ok(args: &[&str]) -> String {
    let out = stoker(args);
    assert!(
        out.status.success(),
        "stoker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The last stdout line, parsed as JSON.
fn last_json(stdout: &str) -> Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

const REQUIRED: &[&str] = &[
    "bytes",
    "samples",
    "batches",
    "seconds",
    "bytes_per_s",
    "samples_per_s",
    "requests",
    "retries",
    "errors",
    "time_to_first_batch_s",
    "batch_latency_s",
    "concurrency",
    "cpu_seconds",
    "unique_samples",
    "duplicate_samples",
];

#[test]
fn help_documents_every_command() {
    let top = ok(&["--help"]);
    assert!(top.contains("bench") && top.contains("gen") && top.contains("AWS_ENDPOINT_URL"));
    let bench = ok(&["bench", "--help"]);
    for flag in [
        "--concurrency",
        "--part-bytes",
        "--batch-size",
        "--epochs",
        "--duration",
        "--rank",
        "--world-size",
        "--seed",
        "--shuffle-buffer",
        "--json",
        "--keys-out",
        "--drop-last",
        "--store-opt",
        "--no-tuning-cache",
        "--outage-tolerance",
        "--even",
        "--no-index-cache",
    ] {
        assert!(bench.contains(flag), "bench --help lacks {flag}");
    }
    assert!(top.contains("index"), "--help lacks the index command");
    let index_help = ok(&["index", "--help"]);
    for flag in ["--refresh", "--dir", "--json", "--store-opt"] {
        assert!(index_help.contains(flag), "index --help lacks {flag}");
    }
    let gen_help = ok(&["gen", "--help"]);
    for flag in ["--shards", "--shard-bytes", "--sample-bytes", "--fields", "--zstd", "--seed"] {
        assert!(gen_help.contains(flag), "gen --help lacks {flag}");
    }
}

#[test]
fn gen_then_bench_partitions_keys_across_ranks() {
    let dir = tempfile::tempdir().expect("tmp");
    let ds = format!("{}/ds/", dir.path().display());
    let out = ok(&[
        "gen",
        &ds,
        "--shards",
        "5",
        "--shard-bytes",
        "200KiB",
        "--sample-bytes",
        "10KiB",
        "--zstd",
    ]);
    assert!(out.contains("wrote 5 shards"), "{out}");
    let mut all = Vec::new();
    for rank in ["0", "1"] {
        let keys = dir.path().join(format!("keys-{rank}.txt"));
        let keys_arg = keys.to_str().expect("path");
        let report = last_json(&ok(&[
            "bench",
            &ds,
            "--json",
            "--world-size",
            "2",
            "--rank",
            rank,
            "--batch-size",
            "8",
            "--keys-out",
            keys_arg,
        ]));
        for field in REQUIRED {
            assert!(report.get(field).is_some(), "--json lacks {field}: {report}");
        }
        let samples = report["samples"].as_u64().expect("samples");
        assert!(samples > 0);
        assert_eq!(report["unique_samples"].as_u64(), Some(samples));
        assert_eq!(report["duplicate_samples"].as_u64(), Some(0));
        assert_eq!(report["errors"].as_u64(), Some(0));
        let lines: Vec<String> =
            std::fs::read_to_string(&keys).expect("keys").lines().map(String::from).collect();
        assert_eq!(lines.len() as u64, samples);
        all.extend(lines);
    }
    let cfg = stoker::synth::SynthConfig {
        shards: 5,
        shard_bytes: 200 << 10,
        sample_bytes: 10 << 10,
        zstd: true,
        ..Default::default()
    };
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no key on two ranks");
    assert_eq!(all.len(), cfg.total_samples(), "every key on some rank");
}

#[test]
fn index_then_even_ranks_take_equal_steps() {
    let dir = tempfile::tempdir().expect("tmp");
    let ds = format!("{}/ds/", dir.path().display());
    ok(&["gen", &ds, "--shards", "5", "--shard-bytes", "160KiB", "--sample-bytes", "8KiB"]);
    // One tuning cache path, so one index directory beside it, for all runs.
    let cache = dir.path().join("tuning.json");
    let run = |args: &[&str]| {
        let out = stoker_with_cache(args, &cache);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        last_json(&String::from_utf8_lossy(&out.stdout))
    };
    let first = run(&["index", &ds, "--json"]);
    assert_eq!(first["index"]["built"].as_u64(), Some(5), "{first}");
    let again = run(&["index", &ds, "--json"]);
    assert_eq!(again["index"]["cached"].as_u64(), Some(5), "{again}");
    let total = again["index"]["samples"].as_u64().expect("samples");
    let mut keys = Vec::new();
    let mut per_rank = Vec::new();
    for rank in ["0", "1", "2"] {
        let file = dir.path().join(format!("keys-{rank}"));
        let report = run(&[
            "bench",
            &ds,
            "--json",
            "--world-size",
            "3",
            "--rank",
            rank,
            "--even",
            "drop",
            "--batch-size",
            "4",
            "--keys-out",
            file.to_str().expect("path"),
        ]);
        let split = &report["split"];
        assert_eq!(split["even"].as_str(), Some("drop"), "{report}");
        assert_eq!(split["index"]["cached"].as_u64(), Some(5), "the index was used: {report}");
        assert_eq!(split["per_epoch"]["dropped"].as_u64(), Some(total % 3));
        per_rank.push((report["samples"].as_u64(), report["batches"].as_u64()));
        keys.extend(std::fs::read_to_string(&file).expect("keys").lines().map(String::from));
    }
    assert!(per_rank.iter().all(|r| *r == per_rank[0]), "equal steps: {per_rank:?}");
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no sample twice");
    assert_eq!(keys.len() as u64, total - total % 3, "all but the declared drops");
    let bad = stoker(&["bench", &ds, "--even", "evenly"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--even"));
}

#[test]
fn embedded_default_runs_with_no_arguments() {
    let report = last_json(&ok(&["bench", "--json"]));
    assert_eq!(report["synthetic"], Value::Bool(true));
    assert_eq!(report["shards"].as_u64(), Some(32));
    assert!(report["bytes"].as_u64().expect("bytes") > 1_000_000_000);
    assert_eq!(report["duplicate_samples"].as_u64(), Some(0));
    assert_eq!(report["unique_samples"], report["samples"]);
    assert_eq!(report["concurrency"]["limit"]["source"], "autotuned");
    assert!(report["verdict"]["text"].as_str().expect("verdict").starts_with("sustains "));
    assert!(report["verdict"]["gpus"].as_u64().is_some());
}

#[test]
fn duration_stops_mid_run_without_an_epoch_verdict() {
    let out = ok(&[
        "bench",
        "--json",
        "--synth-shards",
        "2",
        "--synth-shard-bytes",
        "2MiB",
        "--epochs",
        "100000",
        "--duration",
        "1",
    ]);
    let report = last_json(&out);
    assert!(report["seconds"].as_f64().expect("seconds") < 5.0);
    assert!(report["samples"].as_u64().expect("samples") > 0);
    assert_eq!(report["unique_samples"], Value::Null);
}

/// Three epochs: two boundaries, each with the rate around it and in the
/// middle of the epoch before (a gap between epochs would show here).
#[test]
fn a_multi_epoch_run_reports_its_epoch_boundaries() {
    let out = ok(&[
        "bench",
        "--json",
        "--synth-shards",
        "8",
        "--synth-shard-bytes",
        "8MiB",
        "--batch-size",
        "8",
        "--epochs",
        "3",
    ]);
    let report = last_json(&out);
    let b = report["epoch_boundaries"].as_array().expect("epoch_boundaries");
    let epochs: Vec<u64> = b.iter().filter_map(|x| x["epoch"].as_u64()).collect();
    assert_eq!(epochs, vec![1, 2], "{b:?}");
    for x in b {
        let (around, mid) = (&x["around_bytes_per_s"], &x["mid_epoch_bytes_per_s"]);
        assert!(around.as_f64().expect("around") > 0.0, "{x}");
        assert!(mid.as_f64().expect("mid") > 0.0, "{x}");
        let ratio = x["ratio"].as_f64().expect("ratio");
        let expected = around.as_f64().unwrap_or(0.0) / mid.as_f64().unwrap_or(1.0);
        assert!((ratio - expected).abs() < 1e-9, "{x}");
        assert!(x["window_s"].as_f64().expect("window") <= 1.0);
    }
}

/// `--sweep --rounds 3`: every setting runs in every round, and the ratio
/// reported is the median of the rounds' ratios.
#[test]
fn sweep_rounds_report_the_median_ratio() {
    let out = ok(&[
        "bench",
        "--json",
        "--sweep",
        "--rounds",
        "3",
        // Long enough that a round delivers batches while the other CLI
        // tests share the two cores (0.3 s once measured nothing in CI).
        "--duration",
        "1",
        "--batch-size",
        "8",
        "--synth-shards",
        "2",
        "--synth-shard-bytes",
        "2MiB",
        "--memory-budget",
        "64MiB",
    ]);
    let report = last_json(&out);
    let sweep = &report["sweep"];
    let rounds: Vec<f64> = sweep["round_ratios"]
        .as_array()
        .expect("round_ratios")
        .iter()
        .map(|r| r.as_f64().expect("ratio"))
        .collect();
    assert_eq!(rounds.len(), 3, "{sweep}");
    assert!(rounds.iter().all(|r| *r > 0.0), "{sweep}");
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sweep["auto_over_best_static"].as_f64(), Some(sorted[1]), "{sweep}");
    // 64 MiB budget, half of it for 8 MiB parts: static 1, 2, 4, then auto.
    let rows = sweep["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "{sweep}");
    // Each row is one round, its median: auto's is the report itself, so
    // its requests/s come from the same run as its goodput.
    let auto = &rows[3];
    assert_eq!(auto["bytes_per_s"], report["bytes_per_s"], "{sweep}");
    let rps =
        report["requests"].as_f64().expect("requests") / report["seconds"].as_f64().expect("s");
    assert!((auto["requests_per_s"].as_f64().expect("rps") - rps).abs() < 1e-6 * rps.max(1.0));
    assert!(ok(&["bench", "--help"]).contains("--rounds"));
}

#[test]
fn a_second_run_starts_from_the_tuning_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("tuning.json");
    // Long enough (3 s over a small set) for start-up to end and a settled
    // state to be saved.
    let args = [
        "bench",
        "--json",
        "--synth-shards",
        "4",
        "--synth-shard-bytes",
        "2MiB",
        "--epochs",
        "1000",
        "--duration",
        "3",
    ];
    let run = |args: &[&str]| {
        let out = stoker_with_cache(args, &cache);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&String::from_utf8(out.stdout).expect("utf-8"))
    };
    let first = run(&args);
    assert_eq!(first["tuning_cache"]["warm_start_age_s"], Value::Null, "{first}");
    assert_eq!(first["tuning_cache"]["saved"], true, "{first}");
    assert_eq!(first["concurrency"]["limit"]["source"], "autotuned");
    assert!(cache.exists());
    let second = run(&args);
    assert!(
        second["tuning_cache"]["warm_start_age_s"].as_u64().is_some_and(|a| a < 600),
        "{second}"
    );
    assert_eq!(second["concurrency"]["limit"]["source"], "cached", "{second}");
    // --no-tuning-cache: cold, and nothing reported or saved.
    let cold = run(&[&args[..], &["--no-tuning-cache"]].concat());
    assert_eq!(cold["tuning_cache"], Value::Null, "{cold}");
    assert_eq!(cold["concurrency"]["limit"]["source"], "autotuned");
    // A garbled cache is a cold start, not an error.
    std::fs::write(&cache, b"\x00garbage{").expect("write");
    let garbled = run(&args);
    assert_eq!(garbled["tuning_cache"]["warm_start_age_s"], Value::Null, "{garbled}");
    assert_eq!(garbled["tuning_cache"]["saved"], true, "{garbled}");
}

#[test]
fn bad_input_exits_with_a_one_line_error() {
    // Exit code 2: the user's input is wrong; 1: it is fine but failed.
    let cases: &[(&[&str], &str, i32)] = &[
        (&["bench", "ftp://x/y.tar"], "unknown scheme", 2),
        (&["bench", "/definitely/not/here/"], "no .tar or .tar.zst shards", 1),
        (&["bench", "s3://b/{1..0}.tar"], "backwards", 2),
        (&["bench", "--part-bytes", "lots"], "not a size", 2),
        (&["bench", "--part-bytes", "600MiB"], "more than half of --memory-budget", 2),
        (&["bench", "--concurrency", "0"], "--concurrency must be at least 1", 2),
        (
            &["bench", "--batch-size", "2147483648"],
            "(--batch-size, batch_size) must be between 1 and",
            2,
        ),
        (&["bench", "--world-size", "2", "--rank", "2", "/tmp/"], "--rank 2 is out of range", 2),
    ];
    for (args, want, code) in cases {
        let out = stoker(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_local_s3_server() {
    let server = S3Server::start().await;
    server.bucket("bench");
    let cfg = small_synth(4, false);
    server.write_synth("s3://bench/ds/", &cfg).await;
    let mut args: Vec<String> =
        vec!["bench".into(), "s3://bench/ds/shard-{000000..000003}.tar".into(), "--json".into()];
    for (k, v) in server.options().options {
        args.push("--store-opt".into());
        args.push(format!("{k}={v}"));
    }
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs)
    })
    .await
    .expect("join");
    let report = last_json(&out);
    assert_eq!(report["samples"].as_u64(), Some(cfg.total_samples() as u64));
    assert_eq!(report["duplicate_samples"].as_u64(), Some(0));
    assert!(report["requests"].as_u64().expect("requests") >= 4);
}

/// `bench --emulate remote` on a small synthetic set, plotting into `file`
/// (in a fresh directory); returns the directory, the plot's path and stdout.
fn bench_with_plot(file: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(file);
    let out = ok(&[
        "bench",
        "--emulate",
        "remote",
        "--synth-shards",
        "4",
        "--synth-shard-bytes",
        "8MiB",
        "--epochs",
        "2",
        "--plot",
        path.to_str().expect("path"),
    ]);
    (dir, path, out)
}

#[test]
fn plot_draws_the_autotuner_as_svg() {
    let (_dir, svg, out) = bench_with_plot("tune.svg");
    assert!(out.contains("EMULATED"), "emulation is labelled: {out}");
    let text = std::fs::read_to_string(&svg).expect("plot written");
    assert!(
        text.starts_with("<svg") && text.contains("concurrency limit"),
        "{}",
        &text[..200.min(text.len())]
    );
    let bad = stoker(&["bench", "--plot", "x.pdf", "--synth-shards", "1"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn plot_draws_the_autotuner_as_png() {
    let (_dir, png, _) = bench_with_plot("tune.png");
    let bytes = std::fs::read(&png).expect("plot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
    // 1000 x 900 pixels (IHDR width and height, big-endian).
    assert_eq!(&bytes[16..24], &[0, 0, 3, 232, 0, 0, 3, 132]);
    // Not a blank canvas: the lines and text make it compress poorly.
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
}

/// `--gpu` where there is no CUDA (here, or forced on a GPU host by
/// STOKER_NO_CUDA) says so in one line and exits 2, before generating any
/// data; plain bench on the same machine runs in host mode.
#[test]
fn bench_gpu_without_cuda_exits_2_and_host_mode_runs() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stoker"))
            .args(args)
            .env("STOKER_NO_CUDA", "1")
            .env("STOKER_LOG", "warn")
            .output()
            .expect("run stoker")
    };
    let started = std::time::Instant::now();
    let out = run(&["bench", "--gpu", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no CUDA: STOKER_NO_CUDA is set"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("generating"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let out = run(&["bench", "--json", "--synth-shards", "2", "--synth-shard-bytes", "2MiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = last_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["gpu"], Value::Null);
    assert_eq!(report["input_stall"], Value::Null, "no step asked for");
}

/// `--consumer-step-ms`: a consumer that takes X ms per batch; the input
/// stall is reported apart from start-up, as a share of wall time.
#[test]
fn a_consumer_step_reports_the_input_stall() {
    let out = ok(&[
        "bench",
        "--json",
        "--synth-shards",
        "4",
        "--synth-shard-bytes",
        "4MiB",
        "--batch-size",
        "8",
        "--consumer-step-ms",
        "3",
    ]);
    let r = last_json(&out);
    let s = &r["input_stall"];
    assert_eq!(s["step_ms"].as_f64(), Some(3.0), "{s}");
    let (waited, wall, fraction) = (
        s["waited_s"].as_f64().expect("waited"),
        s["wall_s"].as_f64().expect("wall"),
        s["fraction"].as_f64().expect("fraction"),
    );
    assert!((0.0..=1.0).contains(&fraction), "{s}");
    assert!(waited <= wall, "{s}");
    assert!((fraction - waited / wall).abs() < 1e-9, "{s}");
    // Every batch but the first is followed by a 3 ms step before the
    // next is asked for: the run after the first batch lasts at least that.
    let batches = r["batches"].as_f64().expect("batches");
    assert!(wall >= (batches - 1.0) * 0.003, "{s} over {batches} batches");
    assert!(s["first_batch_s"].as_f64().expect("first") > 0.0);
    for bad in ["-1", "nan", "1e9"] {
        let out = stoker(&["bench", "--consumer-step-ms", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}
