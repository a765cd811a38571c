//! Bad input gets a named error with the shard URL and offset: no panic,
//! no hang. Each case runs against the real S3-protocol server.

use crate::support;

use stoker::fetch::{FetchConfig, FetchError};
use stoker::pipeline::PipelineConfig;
use stoker::shard::ShardError;
use stoker::source::{Dataset, SourceError};
use stoker::{Error, ErrorKind};
use support::*;

async fn server_with(cfg: &stoker::synth::SynthConfig, prefix: &str) -> S3Server {
    let server = S3Server::start().await;
    server.bucket("data");
    server.write_synth(&format!("s3://data/{prefix}/"), cfg).await;
    server
}

async fn run_err(server: &S3Server, url: &str) -> Error {
    run_pipeline(url, &server.options(), small_fetch(), PipelineConfig::default())
        .await
        .expect_err("must fail")
}

fn shard_bytes(cfg: &stoker::synth::SynthConfig, s: usize) -> Vec<u8> {
    cfg.shard_bytes_of(s).expect("synth shard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_shard_is_not_found_with_its_url() {
    let cfg = small_synth(2, false);
    let server = server_with(&cfg, "m").await;
    let err = run_err(&server, "s3://data/m/shard-{000000..000002}.tar").await;
    assert!(
        matches!(&err, Error::Fetch(FetchError::NotFound { shard, .. }) if shard == "s3://data/m/shard-000002.tar"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tar_object_is_named() {
    let server = S3Server::start().await;
    server.bucket("data");
    server
        .put("s3://data/x/notes.tar", b"these are not the bytes you are looking for".repeat(40))
        .await;
    let err = run_err(&server, "s3://data/x/").await;
    assert!(
        matches!(&err, Error::Shard(ShardError::NotTar { shard, .. }) if shard == "s3://data/x/notes.tar"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::CorruptInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tar_names_shard_and_offset() {
    let cfg = small_synth(1, false);
    let server = S3Server::start().await;
    server.bucket("data");
    let mut bytes = shard_bytes(&cfg, 0);
    let cut = bytes.len() / 2 + 100;
    bytes.truncate(cut);
    server.put("s3://data/t/cut.tar", bytes).await;
    let err = run_err(&server, "s3://data/t/cut.tar").await;
    match &err {
        Error::Shard(ShardError::Truncated { shard, offset, .. }) => {
            assert_eq!(shard, "s3://data/t/cut.tar");
            assert_eq!(*offset, cut as u64);
        }
        other => panic!("expected Truncated, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_without_end_marker_is_truncated() {
    let cfg = small_synth(1, false);
    let server = S3Server::start().await;
    server.bucket("data");
    let mut bytes = shard_bytes(&cfg, 0);
    // Cut at a member boundary: drop the end-of-archive blocks.
    while bytes.ends_with(&[0u8; 512]) {
        bytes.truncate(bytes.len() - 512);
    }
    server.put("s3://data/t/noend.tar", bytes).await;
    let err = run_err(&server, "s3://data/t/noend.tar").await;
    assert!(err.to_string().contains("no end-of-archive marker"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_zstd_are_named() {
    let cfg = small_synth(1, true);
    let server = S3Server::start().await;
    server.bucket("data");
    let good = shard_bytes(&cfg, 0);
    // Set the reserved bit of the frame header descriptor.
    let mut corrupt = good.clone();
    corrupt[4] |= 0x08;
    server.put("s3://data/z/bad.tar.zst", corrupt).await;
    let err = run_err(&server, "s3://data/z/bad.tar.zst").await;
    assert!(
        matches!(&err, Error::Shard(ShardError::CorruptZstd { shard, .. }) if shard == "s3://data/z/bad.tar.zst"),
        "{err}"
    );

    let mut short = good;
    short.truncate(short.len() * 2 / 3);
    server.put("s3://data/z/short.tar.zst", short).await;
    let err = run_err(&server, "s3://data/z/short.tar.zst").await;
    assert!(matches!(&err, Error::Shard(ShardError::Truncated { .. })), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_shard_is_named() {
    let server = S3Server::start().await;
    server.bucket("data");
    server.put("s3://data/e/empty.tar", Vec::new()).await;
    let err = run_err(&server, "s3://data/e/empty.tar").await;
    assert!(
        matches!(&err, Error::Shard(ShardError::Empty { shard }) if shard == "s3://data/e/empty.tar"),
        "{err}"
    );

    // A valid tar with nothing in it is no better.
    server.put("s3://data/e/hollow.tar", vec![0u8; 1024]).await;
    let err = run_err(&server, "s3://data/e/hollow.tar").await;
    assert!(matches!(&err, Error::Shard(ShardError::NoSamples { .. })), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_larger_than_the_budget_is_named() {
    let cfg = stoker::synth::SynthConfig {
        sample_bytes: 600 << 10,
        shard_bytes: 1 << 20,
        ..small_synth(1, false)
    };
    let server = server_with(&cfg, "big").await;
    let fetch = FetchConfig { memory_budget_bytes: 1 << 20, part_bytes: 64 << 10, ..small_fetch() };
    let err = run_pipeline("s3://data/big/", &server.options(), fetch, PipelineConfig::default())
        .await
        .expect_err("too big");
    match &err {
        Error::Shard(ShardError::MemberTooLarge { shard, member, offset, limit, .. }) => {
            assert_eq!(shard, "s3://data/big/shard-000000.tar");
            assert!(member.ends_with(".bin"));
            assert_eq!(*offset, 0);
            assert_eq!(*limit, 256 << 10);
        }
        other => panic!("expected MemberTooLarge, got {other}"),
    }
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls_and_patterns_are_named() {
    let opts = stoker::source::StoreOptions::default();
    for (url, want) in [
        ("ftp://host/x.tar", "unknown scheme"),
        ("s3:///nobucket.tar", "bucket"),
        ("s3://b/train/shard-{000..}.tar", "not a non-negative integer"),
        ("s3://b/train/shard-{9..1}.tar", "backwards"),
        ("s3://b/train/shard-{000..001.tar", "without a matching"),
    ] {
        let err = Dataset::open(url, &opts).await.expect_err(url);
        assert!(
            matches!(err, SourceError::BadUrl { .. } | SourceError::BadPattern { .. }),
            "{url}: {err}"
        );
        assert!(err.to_string().contains(want), "{url}: {err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_denied() {
    let cfg = small_synth(1, false);
    let server = server_with(&cfg, "c").await;
    let wrong = server.options_with("not-the-secret");
    // Listing a prefix.
    let err = Dataset::open("s3://data/c/", &wrong).await.expect_err("listing with a wrong secret");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    // Reading a named shard.
    let err = run_pipeline(
        "s3://data/c/shard-000000.tar",
        &wrong,
        small_fetch(),
        PipelineConfig::default(),
    )
    .await
    .expect_err("reading with a wrong secret");
    assert!(
        matches!(&err, Error::Fetch(FetchError::AccessDenied { shard, .. }) if shard.ends_with("shard-000000.tar")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_etag_is_an_error_not_a_mix() {
    let cfg = small_synth(1, false);
    let server = server_with(&cfg, "etag").await;
    let dataset = Dataset::open("s3://data/etag/", &server.options()).await.expect("open");
    let shard = &dataset.shards[0];
    let stats = stoker::fetch::FetchStats::default();
    let err = stoker::fetch::fetch_part(
        dataset.store.as_ref(),
        shard,
        0..1000,
        Some("\"0123456789abcdef\""),
        &small_fetch(),
        &stats,
    )
    .await
    .expect_err("stale ETag");
    assert!(matches!(err, FetchError::ShardChanged { .. }), "{err}");
    let ok = stoker::fetch::fetch_part(
        dataset.store.as_ref(),
        shard,
        0..1000,
        shard.e_tag.as_deref(),
        &small_fetch(),
        &stats,
    )
    .await
    .expect("current ETag");
    assert_eq!(ok.len(), 1000);
}
