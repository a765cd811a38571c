//! The metrics endpoint: `GET /metrics` (Prometheus text format),
//! `/healthz` (alive) and `/readyz` (takes sessions), over plain HTTP/1.1.
//!
//! Hostile until bounded: at most [`MAX_CONNECTIONS`] at once, headers
//! within 5 s (hyper's own header size cap), GET and HEAD only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Figures;

/// Scrapers and probes at once; more wait for a free one.
pub const MAX_CONNECTIONS: usize = 64;

/// What the endpoint reads on each request.
pub trait MetricsSource: Send + Sync + 'static {
    fn figures(&self) -> Figures;
    /// Readiness, for `/readyz`.
    fn ready(&self) -> bool {
        true
    }
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, source: Arc<dyn MetricsSource>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(&req, source.as_ref())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            // A connection kept open idle holds its permit; bound it.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn respond(req: &Request<Incoming>, source: &dyn MetricsSource) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => match super::render(&source.figures()) {
            Ok(body) => text(StatusCode::OK, body),
            Err(e) => {
                tracing::error!(error = %e, "rendering metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be rendered\n")
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if source.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    }
}
