//! Synthetic WebDatasets: deterministic content from a seed, so any byte a
//! pipeline delivers can be checked against [`SynthConfig::sample`].
//!
//! Shard `s` is `shard-{s:06}.tar` (or `.tar.zst`) under the target prefix.
//! Its samples are `s{s:06}-{i:06}`; the first field carries the bulk of
//! the bytes (sizes vary ±50% around `sample_bytes`), `cls` is a decimal
//! label, `json` names the sample, any other field is 64–255 random bytes.
//! Samples are added to a shard until its payload reaches `shard_bytes`.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, RngCore};

use crate::order::stream_rng;
use crate::source::{DatasetUrl, StoreOptions, open_store};
use crate::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// 32 shards × 32 MiB = 1 GiB: the embedded default of `stoker bench`,
    /// large enough to outlast start-up, small enough to write in seconds.
    pub shards: usize,
    pub shard_bytes: u64,
    /// 128 KiB: a mid-sized JPEG, typical of image datasets.
    pub sample_bytes: u64,
    /// Field names; the first carries the bulk.
    pub fields: Vec<String>,
    pub zstd: bool,
    /// 3: zstd's default level.
    pub zstd_level: i32,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            shards: 32,
            shard_bytes: 32 << 20,
            sample_bytes: 128 << 10,
            fields: vec!["bin".into(), "cls".into(), "json".into()],
            zstd: false,
            zstd_level: 3,
            seed: 0,
        }
    }
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSample {
    pub key: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0
            || self.fields.is_empty()
            || self.sample_bytes == 0
            || self.shard_bytes == 0
        {
            return Err(Error::Config(
                "gen needs at least one shard, one field, and non-zero sizes".into(),
            ));
        }
        for f in &self.fields {
            if f.is_empty() || f.contains(['/', '.']) || f.starts_with('_') {
                return Err(Error::Config(format!(
                    "field name '{f}' must be a plain extension like 'jpg'"
                )));
            }
        }
        Ok(())
    }

    /// The object name of shard `s`.
    pub fn shard_name(&self, s: usize) -> String {
        format!("shard-{s:06}.{}", if self.zstd { "tar.zst" } else { "tar" })
    }

    fn bulk_len(&self, s: usize, i: usize) -> u64 {
        let mut rng = stream_rng("synth-size", &[self.seed, s as u64, i as u64]);
        let half = (self.sample_bytes / 2).max(1);
        self.sample_bytes - half + rng.random_range(0..2 * half)
    }

    /// How many samples shard `s` holds.
    pub fn samples_in_shard(&self, s: usize) -> usize {
        let mut total = 0;
        let mut i = 0;
        while total < self.shard_bytes {
            total += self.bulk_len(s, i);
            i += 1;
        }
        i
    }

    /// Sample `i` of shard `s`, byte for byte.
    pub fn sample(&self, s: usize, i: usize) -> SynthSample {
        let key = format!("s{s:06}-{i:06}");
        let mut rng = stream_rng("synth-data", &[self.seed, s as u64, i as u64]);
        let fields = self
            .fields
            .iter()
            .enumerate()
            .map(|(f, name)| {
                let data = match (f, name.as_str()) {
                    (0, _) => random_bytes(&mut rng, self.bulk_len(s, i) as usize),
                    (_, "cls") => (rng.next_u32() % 1000).to_string().into_bytes(),
                    (_, "json") => {
                        format!(r#"{{"key":"{key}","shard":{s},"index":{i}}}"#).into_bytes()
                    }
                    _ => {
                        let n = rng.random_range(64..256);
                        random_bytes(&mut rng, n)
                    }
                };
                (name.clone(), data)
            })
            .collect();
        SynthSample { key, fields }
    }

    /// Shard `s` as tar (or tar.zst) bytes.
    pub fn shard_bytes_of(&self, s: usize) -> Result<Vec<u8>> {
        let io = |e: std::io::Error| Error::Internal(format!("building synthetic shard {s}: {e}"));
        let mut tar = tar::Builder::new(Vec::with_capacity(self.shard_bytes as usize + (1 << 20)));
        for i in 0..self.samples_in_shard(s) {
            let sample = self.sample(s, i);
            for (field, data) in &sample.fields {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o444);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, format!("{}.{field}", sample.key), data.as_slice())
                    .map_err(io)?;
            }
        }
        let bytes = tar.into_inner().map_err(io)?;
        if self.zstd {
            zstd::bulk::compress(&bytes, self.zstd_level).map_err(io)
        } else {
            Ok(bytes)
        }
    }

    /// The parsed samples of one synthetic shard of `shard_bytes`, samples
    /// of about `sample_bytes` (unit tests that collate batches).
    #[cfg(test)]
    pub(crate) fn test_samples(shard_bytes: u64, sample_bytes: u64) -> Vec<crate::shard::Sample> {
        let cfg = SynthConfig { shards: 1, shard_bytes, sample_bytes, ..SynthConfig::default() };
        let shard = bytes::Bytes::from(cfg.shard_bytes_of(0).expect("synthetic shard"));
        crate::shard::parse_shard_bytes("t", shard, 64 << 10, u64::MAX).expect("parse")
    }

    /// Total samples over all shards.
    pub fn total_samples(&self) -> usize {
        (0..self.shards).map(|s| self.samples_in_shard(s)).sum()
    }
}

fn random_bytes(rng: &mut impl RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub shards: usize,
    pub samples: usize,
    pub bytes: u64,
}

/// Writes the dataset under the prefix `url` (e.g. `s3://bucket/synth/`).
pub async fn write_dataset(
    url: &str,
    opts: &StoreOptions,
    cfg: &SynthConfig,
) -> Result<WriteSummary> {
    cfg.validate()?;
    let url = DatasetUrl::parse(url)?;
    let store = open_store(&url, opts)?;
    write_to_store(store, &url, cfg).await
}

/// Writes the dataset to `store` under `url`'s key prefix.
pub async fn write_to_store(
    store: Arc<dyn ObjectStore>,
    url: &DatasetUrl,
    cfg: &SynthConfig,
) -> Result<WriteSummary> {
    cfg.validate()?;
    if crate::source::has_braces(&url.key) || crate::source::is_shard_name(&url.key) {
        return Err(Error::Config(format!(
            "gen writes under a prefix, not to '{}': end it with '/'",
            url.to_url()
        )));
    }
    let prefix = url.key.trim_end_matches('/').to_string();
    if url.scheme == crate::source::Scheme::File {
        tokio::fs::create_dir_all(format!("/{prefix}"))
            .await
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", url.to_url())))?;
    }
    // Two shards built at a time (one per core here), four uploads in flight.
    let results: Vec<(usize, u64)> = futures::stream::iter(0..cfg.shards)
        .map(|s| {
            let cfg = cfg.clone();
            async move {
                let bytes = tokio::task::spawn_blocking(move || cfg.shard_bytes_of(s))
                    .await
                    .map_err(|e| Error::Internal(format!("shard builder panicked: {e}")))??;
                Ok::<_, Error>((s, bytes))
            }
        })
        .buffered(2)
        .map_ok(|(s, bytes)| {
            let store = store.clone();
            let name = cfg.shard_name(s);
            let key = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let shard_url = url.object_url(&key);
            async move {
                let path =
                    Path::parse(&key).map_err(|e| Error::Config(format!("bad key {key}: {e}")))?;
                let n = bytes.len() as u64;
                store.put(&path, PutPayload::from(bytes)).await.map_err(|e| {
                    Error::Fetch(crate::fetch::FetchError::from_store(
                        &crate::source::ShardRef {
                            url: shard_url,
                            path: path.clone(),
                            size: None,
                            e_tag: None,
                        },
                        None,
                        1,
                        e,
                    ))
                })?;
                Ok::<_, Error>((s, n))
            }
        })
        .try_buffer_unordered(4)
        .try_collect()
        .await?;
    let bytes = results.iter().map(|(_, n)| n).sum();
    Ok(WriteSummary { shards: cfg.shards, samples: cfg.total_samples(), bytes })
}
