//! Sessions reading the same shard at about the same time fetch each part
//! once.
//!
//! ```text
//!  session A: claim(part) ─▶ Missing ─reserve, permit─▶ start ─fetch─▶ publish(weak bytes) ─▶ entry Done(weak)
//!  session B: claim(part) ─▶ Waiting (A's fetch is on the wire) or Ready (A still holds it);
//!                            a dead handle or a failed fetch: B fetches it itself
//! ```
//!
//! An entry is in flight only once its owner holds budget and a connection
//! permit, so a joiner never waits on a session that waits on it. A stream
//! never joins its own entries: re-reading a part in the next epoch of a
//! small dataset while the last copy is still held would make a benchmark
//! count bytes it did not fetch.
//!
//! Nothing is kept for sharing's sake: an entry only reaches bytes some
//! session still holds (fetched, not yet batched), so two jobs on one
//! dataset share what overlaps in time and the memory budget is charged
//! once. A part is named by shard URL, ETag and byte range.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{PartData, WeakPart};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartKey {
    url: String,
    e_tag: Option<Arc<str>>,
    start: u64,
    end: u64,
}

impl PartKey {
    pub fn new(url: &str, e_tag: Option<Arc<str>>, range: &Range<u64>) -> PartKey {
        PartKey { url: url.to_string(), e_tag, start: range.start, end: range.end }
    }
}

/// `None` while in flight; then the bytes' handle, or `None` inside when
/// the fetch failed (joiners fetch for themselves).
type Outcome = Option<Option<WeakPart>>;

#[derive(Debug)]
enum Entry {
    InFlight { owner: u64, rx: watch::Receiver<Outcome> },
    Done { owner: u64, part: WeakPart },
}

/// The registry, one per engine.
#[derive(Debug, Default)]
pub struct PartSharing {
    entries: Mutex<HashMap<PartKey, Entry>>,
    /// Bytes handed to a session from another session's fetch.
    pub shared_bytes: AtomicU64,
}

/// What a claim got.
#[derive(Debug)]
pub enum Claim {
    /// Nobody has it: fetch it, [`PartSharing::start`] once the fetch
    /// holds budget and a permit, and publish.
    Missing,
    /// Someone fetched it and still holds it.
    Ready(PartData),
    /// Someone is fetching it.
    Waiting(watch::Receiver<Outcome>),
}

/// The owner's duty to say how its fetch went (dropped unpublished: failed).
#[derive(Debug)]
pub struct Publisher {
    key: Option<PartKey>,
    owner: u64,
    tx: watch::Sender<Outcome>,
    sharing: Arc<PartSharing>,
}

impl PartSharing {
    /// What stream `me` can have of `key` from other streams.
    pub fn claim(&self, key: &PartKey, me: u64) -> Claim {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.claim_locked(&entries, key, me)
    }

    fn claim_locked(&self, entries: &HashMap<PartKey, Entry>, key: &PartKey, me: u64) -> Claim {
        match entries.get(key) {
            Some(Entry::Done { owner, part }) if *owner != me => match part.bytes() {
                Some(bytes) => {
                    self.shared_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
                    Claim::Ready(bytes)
                }
                None => Claim::Missing,
            },
            Some(Entry::InFlight { owner, rx }) if *owner != me => Claim::Waiting(rx.clone()),
            _ => Claim::Missing,
        }
    }

    /// A fetch of `key` is on its way (budget and permit held): others may
    /// wait for it. `Err`: another session got there first since the claim
    /// (give back the budget and permit, and use theirs).
    pub fn start(self: &Arc<Self>, key: PartKey, me: u64) -> Result<Publisher, Claim> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match self.claim_locked(&entries, &key, me) {
            Claim::Missing => {}
            theirs => return Err(theirs),
        }
        let (tx, rx) = watch::channel(None);
        // Forget parts nobody holds any more before the map grows.
        if entries.len() >= 1024 {
            entries.retain(|_, e| match e {
                Entry::Done { part, .. } => part.is_alive(),
                Entry::InFlight { .. } => true,
            });
        }
        entries.insert(key.clone(), Entry::InFlight { owner: me, rx });
        Ok(Publisher { key: Some(key), owner: me, tx, sharing: self.clone() })
    }

    /// Waits for another session's fetch; `None`: fetch it yourself.
    pub async fn join(&self, mut rx: watch::Receiver<Outcome>) -> Option<PartData> {
        let weak = rx.wait_for(Option::is_some).await.ok()?.clone().flatten()?;
        let bytes = weak.bytes()?;
        self.shared_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        Some(bytes)
    }
}

impl Publisher {
    /// The fetch ended: `Some` with the handle when it succeeded.
    pub fn publish(mut self, part: Option<WeakPart>) {
        if let Some(key) = self.key.take() {
            let mut entries = self.sharing.entries.lock().unwrap_or_else(|e| e.into_inner());
            match &part {
                Some(part) => {
                    entries.insert(key, Entry::Done { owner: self.owner, part: part.clone() })
                }
                None => entries.remove(&key),
            };
        }
        self.tx.send_replace(Some(part));
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.sharing.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            self.tx.send_replace(Some(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::MemoryBudget;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_second_claim_gets_the_first_fetch_while_it_is_held() {
        let sharing = Arc::new(PartSharing::default());
        let key = PartKey::new("s3://b/x.tar", None, &(0..4));
        assert!(matches!(sharing.claim(&key, 2), Claim::Missing));
        let publisher = sharing.start(key.clone(), 1).unwrap();
        assert!(
            matches!(sharing.start(key.clone(), 2), Err(Claim::Waiting(_))),
            "started: join it"
        );
        assert!(matches!(sharing.claim(&key, 1), Claim::Missing), "never one's own");
        let Claim::Waiting(rx) = sharing.claim(&key, 2) else { panic!("second waits") };
        let budget = MemoryBudget::new(100);
        let chunks = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        let (bytes, weak) = PartData::held(chunks, budget.reserve(4).await);
        publisher.publish(Some(weak));
        assert_eq!(sharing.join(rx).await.map(|p| p.to_vec()), Some(b"abcd".to_vec()));
        let Claim::Ready(again) = sharing.claim(&key, 2) else { panic!("held: ready") };
        assert_eq!(budget.used_bytes(), 4, "charged once");
        drop((bytes, again));
        assert_eq!(budget.used_bytes(), 0);
        assert!(matches!(sharing.claim(&key, 2), Claim::Missing), "nobody holds it: fetch");
        assert_eq!(sharing.shared_bytes.load(Ordering::Relaxed), 8);
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_fetch_sends_joiners_to_fetch_themselves() {
        let sharing = Arc::new(PartSharing::default());
        let key = PartKey::new("s3://b/x.tar", None, &(0..4));
        let publisher = sharing.start(key.clone(), 1).unwrap();
        let Claim::Waiting(rx) = sharing.claim(&key, 2) else { panic!("in flight") };
        drop(publisher);
        assert!(sharing.join(rx).await.is_none());
        assert!(matches!(sharing.claim(&key, 2), Claim::Missing));
    }
}
