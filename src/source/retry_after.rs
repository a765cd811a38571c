//! Honouring `Retry-After`. object_store turns a 503 or 429 into an error
//! and drops the reply's headers, so the header is read here, between
//! object_store and its HTTP client, and pauses the endpoint's request-rate
//! gate: every stream and session on that store waits, not just the request
//! that was refused.

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
                tracing::warn!(?pause, max = ?MAX_RETRY_AFTER, "The store asked for a long pause (Retry-After); pausing for the maximum.");
            }
            self.gate.pause(pause.min(MAX_RETRY_AFTER));
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
