//! Test support: a real S3-protocol server (s3s + s3s-fs, GET bodies read
//! in 1 MiB pieces: see `large_reads`) on loopback,
//! datasets written through it, and helpers to run the pipeline.
#![allow(dead_code)]

pub mod large_reads;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use stoker::batch::Batch;
use stoker::fetch::{FetchConfig, FetchEngine};
use stoker::pipeline::{Pipeline, PipelineConfig};
use stoker::source::{Dataset, DatasetUrl, StoreOptions, open_store};
use stoker::synth::{SynthConfig, write_to_store};
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "stoker-test-key";
pub const SECRET_KEY: &str = "stoker-test-secret";

/// An s3s-fs server on 127.0.0.1 with one access key; stops when dropped.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let fs = large_reads::LargeReads { inner: fs, root: root.path().to_path_buf() };
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn =
                    http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server { addr, root, task }
    }

    /// Creates a bucket (a directory of the s3s-fs root).
    pub fn bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).expect("create bucket");
    }

    pub fn options_with(&self, secret: &str) -> StoreOptions {
        StoreOptions {
            options: vec![
                ("aws_endpoint".into(), format!("http://{}", self.addr)),
                ("aws_access_key_id".into(), ACCESS_KEY.into()),
                ("aws_secret_access_key".into(), secret.into()),
                ("aws_region".into(), "us-east-1".into()),
                ("aws_allow_http".into(), "true".into()),
            ],
        }
    }

    pub fn options(&self) -> StoreOptions {
        self.options_with(SECRET_KEY)
    }

    /// Writes `bytes` as one object at `url`.
    pub async fn put(&self, url: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let u = DatasetUrl::parse(url).expect("url");
        let store = open_store(&u, &self.options()).expect("store");
        let path = object_store::path::Path::parse(&u.key).expect("key");
        store.put(&path, bytes.into()).await.expect("put");
    }

    /// Writes a synthetic dataset under the prefix `url`.
    pub async fn write_synth(&self, url: &str, cfg: &SynthConfig) {
        let u = DatasetUrl::parse(url).expect("url");
        let store = open_store(&u, &self.options()).expect("store");
        write_to_store(store, &u, cfg).await.expect("gen");
    }
}

/// A small dataset: `shards` shards of ~256 KiB, samples of ~16 KiB.
pub fn small_synth(shards: usize, zstd: bool) -> SynthConfig {
    SynthConfig {
        shards,
        shard_bytes: 256 << 10,
        sample_bytes: 16 << 10,
        fields: vec!["bin".into(), "cls".into(), "json".into()],
        zstd,
        seed: 42,
        ..SynthConfig::default()
    }
}

/// Fetch settings that exercise many parts per shard and members that
/// span parts.
pub fn small_fetch() -> FetchConfig {
    FetchConfig {
        part_bytes: 40_000,
        concurrency: 8,
        memory_budget_bytes: 16 << 20,
        ..FetchConfig::default()
    }
}

/// Runs one pipeline to its end and returns every batch (or the error).
pub async fn run_pipeline(
    url: &str,
    opts: &StoreOptions,
    fetch: FetchConfig,
    cfg: PipelineConfig,
) -> stoker::Result<Vec<Batch>> {
    let dataset = Dataset::open(url, opts).await?;
    run_dataset(&dataset, fetch, cfg).await
}

pub async fn run_dataset(
    dataset: &Dataset,
    fetch: FetchConfig,
    cfg: PipelineConfig,
) -> stoker::Result<Vec<Batch>> {
    run_engine(dataset, FetchEngine::new(dataset.store.clone(), fetch), cfg).await
}

/// As [`run_dataset`], on a given engine (e.g. one on the endpoint's
/// process-wide rate gate, as `bench` and `serve` build them).
pub async fn run_engine(
    dataset: &Dataset,
    engine: std::sync::Arc<FetchEngine>,
    cfg: PipelineConfig,
) -> stoker::Result<Vec<Batch>> {
    let mut pipeline = Pipeline::start(dataset, engine, cfg)?;
    let mut out = Vec::new();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(batch) = pipeline.next().await {
            out.push(batch?);
        }
        Ok::<_, stoker::Error>(())
    })
    .await;
    match waited {
        Ok(r) => r.map(|()| out),
        Err(_) => panic!("pipeline hung for 120 s"),
    }
}

/// Checks every delivered sample against the generator, byte for byte, and
/// returns the keys in delivery order.
pub fn check_against_synth(batches: &[Batch], cfg: &SynthConfig) -> Vec<String> {
    let mut keys = Vec::new();
    for b in batches {
        for i in 0..b.num_samples {
            let key = b.key(i).to_string();
            let (s, idx) = parse_key(&key);
            let want = cfg.sample(s, idx);
            assert_eq!(want.key, key);
            for (field, bytes) in &want.fields {
                let col = b.column(field).unwrap_or_else(|| panic!("batch lacks field {field}"));
                assert!(b.value(col, i) == bytes.as_slice(), "sample {key} field {field} differs");
            }
            keys.push(key);
        }
    }
    keys
}

/// Every sample of the synthetic dataset delivered exactly once, byte for
/// byte, in any order.
pub fn assert_every_sample_once(batches: &[Batch], cfg: &SynthConfig, context: &str) {
    let mut keys = check_against_synth(batches, cfg);
    keys.sort();
    let mut want = all_keys(cfg);
    want.sort();
    assert_eq!(keys, want, "every sample once {context}");
}

/// `s000012-000034` → (12, 34).
pub fn parse_key(key: &str) -> (usize, usize) {
    let (s, i) = key.trim_start_matches('s').split_once('-').expect("synth key");
    (s.parse().expect("shard"), i.parse().expect("index"))
}

/// Every key of the synthetic dataset.
pub fn all_keys(cfg: &SynthConfig) -> Vec<String> {
    (0..cfg.shards)
        .flat_map(|s| (0..cfg.samples_in_shard(s)).map(move |i| cfg.sample(s, i).key))
        .collect()
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
