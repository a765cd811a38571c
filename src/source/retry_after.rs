//! Honouring `Retry-After`. object_store turns a 503 or 429 into an error
//! and drops the reply's headers, so the header is read here, between
//! object_store and its HTTP client. The refused request's retry waits
//! that long: the wait is noted for the request's task ([`noting_retry_after`]
//! around the attempt). The endpoint's request-rate gate hears of it too,
//! and pauses every request only in a storm (see the rate limiter).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

use crate::fetch::RateGate;

/// The longest pause honoured. A store that asks for more still gets its
/// answer from the retries' backoff and the rate limiter; a bad header must
/// not stall training for an hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The `Retry-After` the current attempt's reply carried.
    static ASKED: Cell<Option<Duration>>;
}

/// Runs one request attempt, returning its outcome and the `Retry-After`
/// (capped at [`MAX_RETRY_AFTER`]) its reply carried, if any.
pub async fn noting_retry_after<F: Future>(attempt: F) -> (F::Output, Option<Duration>) {
    ASKED
        .scope(Cell::new(None), async move {
            let out = attempt.await;
            (out, ASKED.with(Cell::get))
        })
        .await
}

/// Builds object_store's usual (reqwest) client, wrapped so that throttling
/// replies pause `gate`.
#[derive(Debug)]
pub struct RetryAfterConnector {
    gate: Arc<RateGate>,
}

impl RetryAfterConnector {
    pub fn new(gate: Arc<RateGate>) -> RetryAfterConnector {
        RetryAfterConnector { gate }
    }
}

impl HttpConnector for RetryAfterConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // reqwest is built without a crypto provider of its own (Cargo.toml:
        // ring instead of aws-lc-rs) and panics on https without one. An
        // error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(RetryAfterService { inner, gate: self.gate.clone() }))
    }
}

#[derive(Debug)]
struct RetryAfterService {
    inner: HttpClient,
    gate: Arc<RateGate>,
}

#[async_trait]
impl HttpService for RetryAfterService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let reply = self.inner.execute(req).await?;
        if matches!(reply.status().as_u16(), 429 | 503)
            && let Some(pause) = reply
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        {
            if pause > MAX_RETRY_AFTER {
                tracing::warn!(?pause, max = ?MAX_RETRY_AFTER, "The store asked for a long pause (Retry-After); waiting the maximum.");
            }
            let pause = pause.min(MAX_RETRY_AFTER);
            // Outside an attempt (a listing): the gate alone.
            let _ = ASKED.try_with(|asked| asked.set(Some(pause)));
            if self.gate.on_retry_after(pause) {
                tracing::debug!(
                    ?pause,
                    "A storm of throttled replies: every request waits (Retry-After)."
                );
            }
        }
        Ok(reply)
    }
}

/// `Retry-After` is whole seconds or an HTTP date (RFC 9110 §10.2.3); a date
/// in the past means no pause. Anything else is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_noted_retry_after_belongs_to_its_attempt() {
        let note = |d| async move {
            let _ = ASKED.try_with(|a| a.set(Some(d)));
        };
        let (_, asked) = noting_retry_after(note(Duration::from_secs(2))).await;
        assert_eq!(asked, Some(Duration::from_secs(2)));
        let (_, asked) = noting_retry_after(async {}).await;
        assert_eq!(asked, None, "a fresh attempt starts with none");
        note(Duration::from_secs(1)).await; // outside any attempt: ignored
    }

    #[test]
    fn seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(5)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
