//! The tuning cache: what the autotuner settled on per endpoint and bucket,
//! so the next `stoker bench` against them starts there (`--no-tuning-cache`
//! turns it off).
//!
//! One small JSON file, `$XDG_CACHE_HOME/stoker/tuning.json` (else
//! `~/.cache/stoker/tuning.json`; `STOKER_TUNING_CACHE` names another),
//! mapping a key (endpoint URL, bucket, emulation profile) to the settled
//! state and when it was saved. Entries older than a week are ignored (a
//! path changes; the controller corrects a stale start anyway, but a week-old
//! one is more likely wrong than right). The file is outside input: an
//! unreadable or malformed one is ignored with a warning, figures that do
//! not fit are dropped (`WarmStart::is_sane`), and at most 64 entries are
//! kept (the oldest go).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::autotune::WarmStart;

/// A week: older entries are not used.
pub const MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// Entries kept in the file.
const MAX_ENTRIES: usize = 64;
/// A cache file larger than this is not read (it is ours and small).
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    saved_unix_secs: u64,
    warm: WarmStart,
}

/// A warm start found in the cache, and its age.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cached {
    pub warm: WarmStart,
    pub age_secs: u64,
}

/// The cache file.
#[derive(Debug, Clone)]
pub struct TuningCache {
    path: PathBuf,
}

fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TuningCache {
    /// The cache at its usual place, if a home or cache directory is known.
    pub fn default_location() -> Option<TuningCache> {
        let path = crate::cache_dir::user_cache_path("STOKER_TUNING_CACHE", "tuning.json")?;
        Some(TuningCache { path })
    }

    pub fn at(path: impl Into<PathBuf>) -> TuningCache {
        TuningCache { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> BTreeMap<String, Entry> {
        let read = || -> Result<BTreeMap<String, Entry>, String> {
            let meta = match std::fs::metadata(&self.path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
                Err(e) => return Err(e.to_string()),
            };
            if meta.len() > MAX_FILE_BYTES {
                return Err(format!("{} bytes, more than a tuning cache holds", meta.len()));
            }
            let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        read().unwrap_or_else(|e| {
            tracing::warn!(path = %self.path.display(), error = %e, "Tuning cache ignored.");
            BTreeMap::new()
        })
    }

    /// The warm start saved under `key`, if it is recent and sane.
    pub fn load(&self, key: &str) -> Option<Cached> {
        let entry = self.read().remove(key)?;
        let age_secs = now_unix_secs().saturating_sub(entry.saved_unix_secs);
        (age_secs <= MAX_AGE_SECS && entry.warm.is_sane())
            .then_some(Cached { warm: entry.warm, age_secs })
    }

    /// Saves `warm` under `key` (atomically: a temporary file renamed over
    /// the old one, so a concurrent reader sees one or the other).
    pub fn save(&self, key: &str, warm: WarmStart) -> std::io::Result<()> {
        let mut entries = self.read();
        entries.insert(key.to_string(), Entry { saved_unix_secs: now_unix_secs(), warm });
        while entries.len() > MAX_ENTRIES {
            let oldest = entries
                .iter()
                .filter(|(k, _)| *k != key)
                .min_by_key(|(_, e)| e.saved_unix_secs)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            entries.remove(&oldest);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, &entries).map_err(std::io::Error::other)?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The cache key of a dataset: where its requests go (the endpoint URL an
/// S3-compatible store was given, else the scheme and bucket) and how
/// (an emulation profile is another path).
pub fn cache_key(endpoint: &str, endpoint_url: Option<&str>, emulated: Option<&str>) -> String {
    let mut key = endpoint.to_string();
    if let Some(url) = endpoint_url {
        key.push_str(" via ");
        key.push_str(url);
    }
    if let Some(profile) = emulated {
        key.push_str(" emulated ");
        key.push_str(profile);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(concurrency: usize) -> WarmStart {
        WarmStart {
            concurrency,
            part_bytes: 8 << 20,
            goodput_bps: 6e8,
            min_latency_secs: 0.2,
            ttfb_share: 0.2,
            request_bytes: 8e6,
        }
    }

    #[test]
    fn saves_and_loads_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuningCache::at(dir.path().join("sub/tuning.json"));
        assert_eq!(cache.load("s3://a"), None);
        cache.save("s3://a", warm(24)).unwrap();
        cache.save("s3://b", warm(7)).unwrap();
        let got = cache.load("s3://a").unwrap();
        assert_eq!(got.warm, warm(24));
        assert!(got.age_secs < 60);
        assert_eq!(cache.load("s3://b").unwrap().warm.concurrency, 7);
        assert_eq!(cache.load("s3://c"), None);
    }

    #[test]
    fn hostile_or_stale_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tuning.json");
        let cache = TuningCache::at(&path);
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(cache.load("s3://a"), None);
        // A broken file is replaced on the next save.
        cache.save("s3://a", warm(3)).unwrap();
        assert_eq!(cache.load("s3://a").unwrap().warm.concurrency, 3);
        // Insane figures and old entries are not used.
        let bad = format!(
            r#"{{"s3://a": {{"saved_unix_secs": {}, "warm": {{"concurrency": 0, "part_bytes": 1,
            "goodput_bps": 1.0, "min_latency_secs": 1.0, "ttfb_share": 0.1, "request_bytes": 1.0}}}},
            "s3://b": {{"saved_unix_secs": 5, "warm": {}}}}}"#,
            now_unix_secs(),
            serde_json::to_string(&warm(4)).unwrap()
        );
        std::fs::write(&path, bad).unwrap();
        assert_eq!(cache.load("s3://a"), None);
        assert_eq!(cache.load("s3://b"), None);
    }

    #[test]
    fn keeps_at_most_64_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuningCache::at(dir.path().join("tuning.json"));
        for i in 0..70 {
            cache.save(&format!("s3://b{i}"), warm(i + 1)).unwrap();
        }
        assert_eq!(cache.read().len(), 64);
        assert!(cache.load("s3://b69").is_some());
    }

    #[test]
    fn keys_name_endpoint_url_and_emulation() {
        assert_eq!(cache_key("s3://bkt", None, None), "s3://bkt");
        assert_eq!(
            cache_key("s3://bkt", Some("http://10.0.0.2:9000"), Some("remote")),
            "s3://bkt via http://10.0.0.2:9000 emulated remote"
        );
    }
}
