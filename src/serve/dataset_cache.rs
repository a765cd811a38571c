//! One shard list per dataset for the daemon's sessions.
//!
//! Every rank of a job opens the same dataset, each in its own session:
//! listed per session, a prefix of 100,000 shards cost 100 LIST pages and
//! ~15 MB per rank (~150 bytes a shard), 32 ranks on a node ~0.5 GB for
//! one list, and ranks that listed a few seconds apart could see
//! different lists while shards were being written. Sessions that open a
//! URL while another session holds its list, and within [`FRESH_FOR`] of
//! its listing, share that list (and its store); a later session lists
//! again, so a new job sees new shards. Failed listings are not kept.
//! Sessions opening the same URL at once wait for one listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::source::{Dataset, DatasetUrl, ShardRef, SourceError, StoreOptions};

/// How long a listing is shared with sessions that open after it: the
/// ranks of a job start within seconds of each other; a minute later is
/// another job, which expects what the bucket holds now.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// A listing kept while some session holds its shards.
#[derive(Debug)]
struct Listed {
    at: Instant,
    url: DatasetUrl,
    store: Arc<dyn object_store::ObjectStore>,
    shards: Weak<[Arc<ShardRef>]>,
}

impl Listed {
    fn dataset(&self, fresh_for: Duration) -> Option<Dataset> {
        if self.at.elapsed() >= fresh_for {
            return None;
        }
        let shards = self.shards.upgrade()?;
        Some(Dataset { url: self.url.clone(), store: self.store.clone(), shards })
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Listed>>>;

/// The daemon's datasets by URL.
#[derive(Debug)]
pub struct DatasetCache {
    slots: Mutex<HashMap<String, Slot>>,
    fresh_for: Duration,
}

impl Default for DatasetCache {
    fn default() -> Self {
        DatasetCache::new(FRESH_FOR)
    }
}

impl DatasetCache {
    pub fn new(fresh_for: Duration) -> DatasetCache {
        DatasetCache { slots: Mutex::default(), fresh_for }
    }

    /// The dataset at `url`: a live session's listing if fresh, else a
    /// new one (as [`Dataset::open_with`]).
    pub async fn open(
        &self,
        url: &str,
        opts: &StoreOptions,
        retry: &crate::fetch::FetchConfig,
    ) -> Result<Dataset, SourceError> {
        let slot = self.slot(url);
        let mut listed = slot.lock().await;
        if let Some(dataset) = listed.as_ref().and_then(|l| l.dataset(self.fresh_for)) {
            return Ok(dataset);
        }
        *listed = None;
        let dataset = Dataset::open_with(url, opts, retry).await?;
        *listed = Some(Listed {
            at: Instant::now(),
            url: dataset.url.clone(),
            store: dataset.store.clone(),
            shards: Arc::downgrade(&dataset.shards),
        });
        Ok(dataset)
    }

    /// The URL's slot; forgets slots nobody uses (no live list, nobody
    /// opening), so a client naming endless URLs grows nothing.
    fn slot(&self, url: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|key, slot| {
            key == url
                || Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .map_or(true, |l| l.as_ref().is_some_and(|l| l.shards.strong_count() > 0))
        });
        slots.entry(url.to_string()).or_default().clone()
    }

    /// URLs with a slot (for tests).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_dataset(shards: usize) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..shards {
            std::fs::write(dir.path().join(format!("s-{i:03}.tar")), [0u8; 1024]).expect("write");
        }
        let url = format!("file://{}/", dir.path().display());
        (dir, url)
    }

    #[tokio::test]
    async fn sessions_share_a_live_fresh_listing_and_list_again_after() {
        let (dir, url) = local_dataset(3);
        let cache = DatasetCache::new(Duration::from_millis(300));
        let opts = StoreOptions::default();
        let cfg = crate::fetch::FetchConfig::default();
        let first = cache.open(&url, &opts, &cfg).await.expect("listed");
        assert_eq!(first.shards.len(), 3);
        std::fs::write(dir.path().join("s-003.tar"), [0u8; 1024]).expect("write");
        let second = cache.open(&url, &opts, &cfg).await.expect("shared");
        assert!(Arc::ptr_eq(&first.shards, &second.shards), "one list for both sessions");
        assert_eq!(second.shards.len(), 3, "the shared listing, not a new one");
        // Nobody holds it any more: listed again, new shard included.
        drop((first, second));
        let third = cache.open(&url, &opts, &cfg).await.expect("listed again");
        assert_eq!(third.shards.len(), 4);
        // Held, but older than the freshness window: listed again.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let fourth = cache.open(&url, &opts, &cfg).await.expect("listed again");
        assert!(!Arc::ptr_eq(&third.shards, &fourth.shards));
    }

    #[tokio::test]
    async fn failed_and_dropped_listings_leave_nothing_behind() {
        let cache = DatasetCache::default();
        let opts = StoreOptions::default();
        let cfg = crate::fetch::FetchConfig::default();
        for i in 0..50 {
            let missing = format!("file:///nonexistent-stoker-{i}/");
            assert!(cache.open(&missing, &opts, &cfg).await.is_err());
        }
        assert!(cache.len() <= 1, "{} slots kept for failed listings", cache.len());
        let (_dir, url) = local_dataset(1);
        let held = cache.open(&url, &opts, &cfg).await.expect("listed");
        let _ = cache.open("file:///nonexistent-stoker-x/", &opts, &cfg).await;
        assert!(cache.len() <= 2);
        drop(held);
        let _ = cache.open("file:///nonexistent-stoker-y/", &opts, &cfg).await;
        assert_eq!(cache.len(), 1, "only the URL being opened");
    }
}
