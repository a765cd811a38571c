//! A store wrapper that changes only what GETs do and forwards everything
//! else: the one place the `ObjectStore` forwarding boilerplate lives. The
//! emulated remote store (`--emulate remote`) and the tests' fault
//! injectors are interceptors.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// What an [`InterceptedStore`] does with each GET (HEADs included: they
/// are GETs with `options.head` set).
#[async_trait]
pub trait GetInterceptor: fmt::Debug + Send + Sync + 'static {
    /// Serves one GET, usually by calling `inner.get_opts` and changing the
    /// timing, the body or the outcome.
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult>;
}

/// `inner` with its GETs going through `hook`.
#[derive(Debug)]
pub struct InterceptedStore<H> {
    inner: Arc<dyn ObjectStore>,
    hook: H,
}

impl<H: GetInterceptor> InterceptedStore<H> {
    pub fn new(inner: Arc<dyn ObjectStore>, hook: H) -> InterceptedStore<H> {
        InterceptedStore { inner, hook }
    }

    pub fn hook(&self) -> &H {
        &self.hook
    }
}

impl<H: fmt::Debug> fmt::Display for InterceptedStore<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Intercepted({:?}, {})", self.hook, self.inner)
    }
}

#[async_trait]
impl<H: GetInterceptor> ObjectStore for InterceptedStore<H> {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.hook.get_opts(self.inner.as_ref(), location, options).await
    }

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
