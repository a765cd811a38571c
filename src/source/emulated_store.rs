//! A store wrapper that behaves like a remote one: each GET waits a time to
//! first byte, then its body flows no faster than a per-request bandwidth.
//! `stoker bench --emulate remote` uses it so that the autotuner has
//! something to tune without a bucket; results are labelled as emulated.
//!
//! (object_store's `ThrottledStore` does the same for streams but cannot
//! serve local files, which is what the embedded default reads.)

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore};

use super::{GetInterceptor, InterceptedStore};

/// How the emulated remote store behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteProfile {
    pub ttfb: Duration,
    pub per_request_bytes_per_s: f64,
}

impl RemoteProfile {
    /// 20 ms to first byte and 50 MB/s per request: S3 Standard seen from
    /// another region, roughly (S3 gives ~85 MB/s per request in-region).
    pub const REMOTE: RemoteProfile =
        RemoteProfile { ttfb: Duration::from_millis(20), per_request_bytes_per_s: 50e6 };
}

/// A store that behaves like a remote one.
pub type EmulatedStore = InterceptedStore<RemoteProfile>;

/// 256 KiB chunks: fine-grained pacing, few wake-ups.
const CHUNK: usize = 256 << 10;

/// Paces `stream` to `rate` bytes per second from `start`.
fn paced(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    rate: f64,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let start = Instant::now();
    let mut sent = 0u64;
    stream
        .then(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
            }
            let due = Duration::from_secs_f64(sent as f64 / rate);
            async move {
                let elapsed = start.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
                chunk
            }
        })
        .boxed()
}

/// A local file's range as a stream of chunks.
fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let file = Arc::new(file);
    let starts: Vec<u64> = (range.start..range.end).step_by(CHUNK).collect();
    futures::stream::iter(starts)
        .then(move |at| {
            let (file, end) = (file.clone(), range.end);
            async move {
                let len = (end - at).min(CHUNK as u64) as usize;
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
                })
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "emulated",
                    source: Box::new(e),
                })?
                .map_err(|e| object_store::Error::Generic {
                    store: "emulated",
                    source: Box::new(e),
                })
            }
        })
        .boxed()
}

#[async_trait]
impl GetInterceptor for RemoteProfile {
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        tokio::time::sleep(self.ttfb).await;
        let GetResult { payload, meta, range, attributes, extensions } =
            inner.get_opts(location, options).await?;
        let stream = match payload {
            GetResultPayload::Stream(s) => s,
            GetResultPayload::File(file, _) => file_stream(file, range.clone()),
        };
        let stream = paced(stream, self.per_request_bytes_per_s);
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn adds_latency_and_caps_bandwidth() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("x");
        inner.put(&path, vec![7u8; 1 << 20].into()).await.unwrap();
        let profile =
            RemoteProfile { ttfb: Duration::from_millis(30), per_request_bytes_per_s: 10e6 };
        let store = EmulatedStore::new(inner, profile);
        let started = Instant::now();
        let bytes: Vec<Bytes> =
            store.get(&path).await.unwrap().into_stream().try_collect().await.unwrap();
        let took = started.elapsed();
        assert_eq!(bytes.iter().map(Bytes::len).sum::<usize>(), 1 << 20);
        // 30 ms + 1 MiB at 10 MB/s ≈ 135 ms.
        assert!(took >= Duration::from_millis(120), "{took:?}");
    }
}
