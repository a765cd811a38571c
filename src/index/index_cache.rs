//! Shard indexes on local disk: one small file per shard under
//! `$XDG_CACHE_HOME/stoker/index/` (else `~/.cache/stoker/index/`;
//! `STOKER_INDEX_CACHE` names another directory), named by a hash of the
//! shard's URL. A file is used only when it is intact and of the shard's
//! current ETag and size; anything else is a miss, and the shard is read
//! and indexed again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::shard_index::{IndexError, MAX_SAMPLES, ShardIndex};
use crate::order::Digest;

/// An index file larger than this is not read (JSON of `MAX_SAMPLES`
/// offsets is below it).
const MAX_FILE_BYTES: u64 = (MAX_SAMPLES as u64) * 24 + (1 << 20);

/// The index directory, with what this process has read or written.
#[derive(Debug)]
pub struct IndexCache {
    dir: PathBuf,
    /// By URL: indexes read or saved, so each file is read once.
    known: Mutex<HashMap<String, Arc<ShardIndex>>>,
    /// A save failed (a read-only or full disk): indexes are kept in
    /// memory only from then on, and the failure is told once.
    unwritable: AtomicBool,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Fresh(Arc<ShardIndex>),
    Missing,
    /// There was one, not usable (why): the shard is read again.
    Refused(IndexError),
}

impl IndexCache {
    /// The cache at its usual place, if a home or cache directory is known.
    pub fn default_location() -> Option<Arc<IndexCache>> {
        crate::cache_dir::user_cache_path("STOKER_INDEX_CACHE", "index").map(IndexCache::at)
    }

    pub fn at(dir: impl Into<PathBuf>) -> Arc<IndexCache> {
        Arc::new(IndexCache {
            dir: dir.into(),
            known: Mutex::new(HashMap::new()),
            unwritable: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `url`'s index.
    pub fn file_of(&self, url: &str) -> PathBuf {
        let mut d = Digest::new(0x5354_4f4b_4552);
        d.eat(url.as_bytes());
        self.dir.join(format!("{}.json", d.hex()))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ShardIndex>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `url`'s index, if one of this version (`e_tag`, `size`) is here.
    pub fn load(&self, url: &str, e_tag: Option<&str>, size: u64) -> Lookup {
        if let Some(index) = self.known().get(url).cloned()
            && index.matches(url, e_tag, size).is_ok()
        {
            return Lookup::Fresh(index);
        }
        let path = self.file_of(url);
        let bytes = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => return Lookup::Refused(IndexError::Malformed(e.to_string())),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Lookup::Refused(IndexError::Malformed(format!("{} bytes", meta.len())));
            }
            Ok(_) => match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => return Lookup::Refused(IndexError::Malformed(e.to_string())),
            },
        };
        let index = match ShardIndex::parse(&bytes).and_then(|i| {
            i.matches(url, e_tag, size)?;
            Ok(i)
        }) {
            Ok(index) => Arc::new(index),
            Err(e) => return Lookup::Refused(e),
        };
        self.known().insert(url.to_string(), index.clone());
        Lookup::Fresh(index)
    }

    /// Saves `index` (atomically: a reader sees the old file or the new),
    /// unless this process saved or read the same one already. The first
    /// failure is returned; after it, indexes are kept in memory only.
    pub fn save(&self, index: ShardIndex) -> std::io::Result<Arc<ShardIndex>> {
        if let Some(known) = self.known().get(&index.url)
            && known.check == index.check
        {
            return Ok(known.clone());
        }
        if !self.unwritable.load(Ordering::Relaxed) {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(&self.dir)?;
                let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
                std::io::Write::write_all(&mut tmp, &index.encode())?;
                tmp.persist(self.file_of(&index.url)).map_err(|e| e.error)?;
                Ok(())
            };
            if let Err(e) = write() {
                self.unwritable.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        let index = Arc::new(index);
        self.known().insert(index.url.clone(), index.clone());
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwritable_directory_fails_once_then_keeps_indexes_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // A directory under a file cannot be made.
        let cache = IndexCache::at(file.join("idx"));
        let index = |url: &str| ShardIndex::new(url, None, 4096, false, vec![0]);
        assert!(cache.save(index("u1")).is_err());
        assert!(cache.save(index("u2")).is_ok(), "no second failure");
        assert!(matches!(cache.load("u2", None, 4096), Lookup::Fresh(_)));
    }

    #[test]
    fn saves_loads_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::at(dir.path().join("idx"));
        assert!(matches!(cache.load("s3://b/a.tar", None, 4096), Lookup::Missing));
        let index = ShardIndex::new("s3://b/a.tar", Some("e1"), 4096, false, vec![0, 1024]);
        cache.save(index.clone()).unwrap();
        // A fresh process (no memo) reads the file.
        let other = IndexCache::at(dir.path().join("idx"));
        match other.load("s3://b/a.tar", Some("e1"), 4096) {
            Lookup::Fresh(got) => assert_eq!(*got, index),
            got => panic!("{got:?}"),
        }
        assert!(matches!(
            other.load("s3://b/a.tar", Some("e2"), 4096),
            Lookup::Refused(IndexError::Stale)
        ));
        // A damaged file is refused, not trusted.
        std::fs::write(other.file_of("s3://b/a.tar"), b"{\"v\":1,").unwrap();
        let fresh = IndexCache::at(dir.path().join("idx"));
        assert!(matches!(
            fresh.load("s3://b/a.tar", Some("e1"), 4096),
            Lookup::Refused(IndexError::Malformed(_))
        ));
    }
}
