//! s3s-fs with GET bodies read in 1 MiB pieces.
//!
//! s3s-fs streams a body through `ReaderStream::with_capacity(file, 4096)`:
//! each 4 KiB is a trip through tokio's blocking pool, and at 200 MB/s that
//! cost the test server 1.4 of this machine's 2 cores, six times the client
//! it served. The loopback autotune test then measured CPU contention, not
//! the path it injects. This wrapper keeps s3s-fs for everything (the reply
//! headers, ETag and range checks of GET included) and only swaps the GET
//! body for a stream of 1 MiB positioned reads: 256× fewer trips, and a GET
//! of a whole large object holds one piece in memory at a time, not the
//! object. The integration tests and `examples/local_s3` both use it.

use std::path::PathBuf;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;

pub struct LargeReads {
    pub inner: FileSystem,
    pub root: PathBuf,
}

/// `bytes FIRST-LAST/LEN` (what s3s-fs sets for a range) as `FIRST..LAST+1`.
fn parse_content_range(s: &str) -> Option<(u64, u64)> {
    let (first, last) = s.strip_prefix("bytes ")?.split('/').next()?.split_once('-')?;
    Some((first.parse().ok()?, last.parse::<u64>().ok()? + 1))
}

/// Bytes read per trip through the blocking pool.
const PIECE_BYTES: u64 = 1 << 20;

/// `start..end` of `file` as a stream of positioned reads of up to
/// [`PIECE_BYTES`], each on tokio's blocking pool.
fn range_stream(
    file: std::sync::Arc<std::fs::File>,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static {
    futures::stream::try_unfold(start, move |at| {
        let file = file.clone();
        async move {
            if at >= end {
                return Ok(None);
            }
            let n = (end - at).min(PIECE_BYTES) as usize;
            let piece = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; n];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((bytes::Bytes::from(piece), at + n as u64)))
        }
    })
}

impl LargeReads {
    async fn ranged_get(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        // s3s-fs resolves `..` inside its root; a plain join would not, so
        // such keys keep s3s-fs's own (slow, correct) body.
        let plain = std::path::Path::new(&req.input.key)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let mut resp = self.inner.get_object(req).await?;
        if !plain {
            return Ok(resp);
        }
        let out = &mut resp.output;
        let len = out.content_length.unwrap_or(0).max(0) as u64;
        let (start, end) = match out.content_range.as_deref() {
            Some(range) => parse_content_range(range)
                .ok_or_else(|| s3_error!(InternalError, "content range {range}"))?,
            None => (0, len),
        };
        let file = std::fs::File::open(path).map_err(|e| s3_error!(InternalError, "open: {e}"))?;
        out.body = Some(StreamingBlob::wrap(range_stream(std::sync::Arc::new(file), start, end)));
        Ok(resp)
    }
}

/// The `S3` impl: GET in 1 MiB pieces, the rest is s3s-fs's. (A macro that
/// writes the whole impl: `async_trait` must see the expanded methods.)
macro_rules! large_reads_impl {
    ($($name:ident: $input:ty => $output:ty;)*) => {
        #[async_trait::async_trait]
        impl S3 for LargeReads {
            async fn get_object(
                &self,
                req: S3Request<GetObjectInput>,
            ) -> S3Result<S3Response<GetObjectOutput>> {
                self.ranged_get(req).await
            }
            $(
                async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$name(req).await
                }
            )*
        }
    };
}

large_reads_impl! {
    create_bucket: CreateBucketInput => CreateBucketOutput;
    copy_object: CopyObjectInput => CopyObjectOutput;
    delete_bucket: DeleteBucketInput => DeleteBucketOutput;
    delete_object: DeleteObjectInput => DeleteObjectOutput;
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
    head_bucket: HeadBucketInput => HeadBucketOutput;
    head_object: HeadObjectInput => HeadObjectOutput;
    list_buckets: ListBucketsInput => ListBucketsOutput;
    list_objects: ListObjectsInput => ListObjectsOutput;
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
    put_object: PutObjectInput => PutObjectOutput;
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
    upload_part: UploadPartInput => UploadPartOutput;
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
    list_parts: ListPartsInput => ListPartsOutput;
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
}
