//! Opening the object store a [`DatasetUrl`] names.
//!
//! Credentials and endpoints come from the usual environment (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`, including web identity), then from explicit
//! `key=value` options (`--store-opt`), which win. S3-compatible stores (B2,
//! MinIO, R2) use path-style addressing, object_store's default.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::retry_after::RetryAfterConnector;
use super::{DatasetUrl, Scheme, SourceError};
use crate::fetch::RateGate;

/// Extra store configuration, applied after the environment.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// object_store configuration keys and values, e.g.
    /// `("aws_endpoint", "http://127.0.0.1:9000")`.
    pub options: Vec<(String, String)>,
}

/// `memory://NAME/...` stores live for the whole process, so that one
/// command can write a dataset and another read it back.
static MEMORY_STORES: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(Default::default);

/// The S3 builder for `url`: the environment, then our defaults, then
/// `opts` (`open_store` and `s3_endpoint` resolve the same way).
fn s3_builder(url: &DatasetUrl, opts: &StoreOptions) -> Result<AmazonS3Builder, SourceError> {
    let defaults = [("connect_timeout".to_string(), "10s".to_string())];
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&url.authority);
    for (k, v) in defaults.iter().chain(&opts.options) {
        let key: AmazonS3ConfigKey = k
            .parse()
            .map_err(|e| SourceError::BadOption { key: k.to_string(), reason: format!("{e}") })?;
        b = b.with_config(key, v);
    }
    Ok(b)
}

/// The endpoint URL an S3-compatible store of `url` is reached at, when
/// one is configured (environment or `opts`, under any of object_store's
/// names for it); `None` for AWS itself and for other schemes.
pub fn s3_endpoint(url: &DatasetUrl, opts: &StoreOptions) -> Option<String> {
    (url.scheme == Scheme::S3)
        .then(|| s3_builder(url, opts).ok()?.get_config_value(&AmazonS3ConfigKey::Endpoint))
        .flatten()
        .filter(|e| !e.is_empty())
}

/// Builds the store for `url`. Nothing is sent over the network yet.
pub fn open_store(
    url: &DatasetUrl,
    opts: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, SourceError> {
    let build_err = |source: object_store::Error| SourceError::Store { url: url.to_url(), source };
    let opt_err =
        |key: &str, reason: String| SourceError::BadOption { key: key.to_string(), reason };
    // Our fetch engine retries with its own backoff and counts every retry;
    // a second, hidden retry loop underneath would hide throttling from it.
    let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
    // Retry-After, which object_store's errors drop, pauses the endpoint.
    let connector = || RetryAfterConnector::new(RateGate::for_endpoint(&url.endpoint()));
    // Client options go through config keys, not `with_client_options`,
    // which would replace what the environment and --store-opt configured.
    // 10 s to connect: a store that does not answer by then is down.
    let defaults = [("connect_timeout".to_string(), "10s".to_string())];
    let options = || defaults.iter().chain(&opts.options);
    let store: Arc<dyn ObjectStore> = match url.scheme {
        Scheme::S3 => {
            let mut b = s3_builder(url, opts)?;
            // A plain-http endpoint (MinIO, a local test server) was asked
            // for explicitly, so allow it rather than fail on the scheme.
            let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            Arc::new(
                b.with_retry(retry).with_http_connector(connector()).build().map_err(build_err)?,
            )
        }
        Scheme::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&url.authority);
            for (k, v) in options() {
                b = b.with_config(k.parse().map_err(|e| opt_err(k, format!("{e}")))?, v);
            }
            Arc::new(
                b.with_retry(retry).with_http_connector(connector()).build().map_err(build_err)?,
            )
        }
        Scheme::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&url.authority);
            for (k, v) in options() {
                b = b.with_config(k.parse().map_err(|e| opt_err(k, format!("{e}")))?, v);
            }
            Arc::new(
                b.with_retry(retry).with_http_connector(connector()).build().map_err(build_err)?,
            )
        }
        Scheme::Http | Scheme::Https => {
            let base = format!(
                "{}://{}",
                if url.scheme == Scheme::Http { "http" } else { "https" },
                url.authority
            );
            let client = ClientOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(10))
                .with_allow_http(url.scheme == Scheme::Http);
            let b = HttpBuilder::new().with_url(base).with_client_options(client);
            Arc::new(
                b.with_retry(retry).with_http_connector(connector()).build().map_err(build_err)?,
            )
        }
        Scheme::File => Arc::new(LocalFileSystem::new()),
        Scheme::Memory => {
            let mut stores = MEMORY_STORES.lock().unwrap_or_else(|p| p.into_inner());
            stores.entry(url.authority.clone()).or_default().clone()
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_read_under_any_of_its_names() {
        let url = DatasetUrl::parse("s3://bkt/train/").expect("url");
        for key in ["aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"] {
            let opts = StoreOptions { options: vec![(key.into(), "http://10.0.0.2:9000".into())] };
            assert_eq!(s3_endpoint(&url, &opts).as_deref(), Some("http://10.0.0.2:9000"), "{key}");
        }
        let gcs = DatasetUrl::parse("gs://bkt/train/").expect("url");
        let opts = StoreOptions { options: vec![("endpoint".into(), "http://x".into())] };
        assert_eq!(s3_endpoint(&gcs, &opts), None);
    }

    /// https goes through rustls on ring (no provider is built into
    /// reqwest): the client sends a TLS ClientHello and a server that does
    /// not answer it is an error, not a panic.
    #[tokio::test]
    async fn an_https_store_speaks_tls_through_the_ring_provider() {
        use object_store::ObjectStoreExt;
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut first = [0u8; 3];
            conn.read_exact(&mut first).await.expect("read");
            first // dropped here: the handshake gets no answer
        });
        let url = DatasetUrl::parse(&format!("https://{addr}/d/")).expect("url");
        let store = open_store(&url, &StoreOptions::default()).expect("store");
        let got = store.get(&object_store::path::Path::from("d/x.tar")).await;
        assert!(got.is_err(), "a server that drops the handshake gave {got:?}");
        // A TLS handshake record (0x16), protocol 3.x; a client that never
        // connected fails here instead of leaving the accept waiting.
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the client never connected")
            .expect("server");
        assert_eq!(first[..2], [0x16, 0x03]);
    }
}
