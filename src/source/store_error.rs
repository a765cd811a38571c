//! What an `object_store` error means for us: its kind and whether a retry
//! can help. Classification by HTTP status where the store gives one, as in
//! object_store's own retry policy, which we switch off so that every retry is
//! ours to count and to pace.

use crate::ErrorKind;

/// How an object-store failure is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailure {
    pub kind: ErrorKind,
    /// A retry may succeed: 5xx, 429, 408, timeouts, resets, broken bodies.
    pub transient: bool,
    /// The store asked us to slow down (503 SlowDown, 429).
    pub throttled: bool,
    pub status: Option<u16>,
}

/// Classifies `error`, walking its source chain for an HTTP status.
pub fn classify(error: &object_store::Error) -> StoreFailure {
    let fixed = |kind| StoreFailure { kind, transient: false, throttled: false, status: None };
    match error {
        object_store::Error::NotFound { .. } => return fixed(ErrorKind::NotFound),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            return fixed(ErrorKind::PermissionDenied);
        }
        object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
            return fixed(ErrorKind::CorruptInput);
        }
        object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => {
            return fixed(ErrorKind::InvalidArgument);
        }
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            return fixed(ErrorKind::InvalidArgument);
        }
        _ => {}
    }
    let status = status_of(error);
    match status {
        Some(code) => {
            let throttled = code == 429 || code == 503;
            let transient = code >= 500 || code == 429 || code == 408;
            let kind = match code {
                401 | 403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                412 => ErrorKind::CorruptInput,
                _ if transient => ErrorKind::Unavailable,
                _ => ErrorKind::InvalidArgument,
            };
            StoreFailure { kind, transient, throttled, status }
        }
        // No status: connection refused or reset, timeout, a body that broke
        // off. All of these are worth another try.
        None => StoreFailure {
            kind: ErrorKind::Unavailable,
            transient: true,
            throttled: false,
            status: None,
        },
    }
}

/// The HTTP status in the cause chain. object_store keeps its retry error
/// type private, so read the status from its message: "Server returned
/// non-2xx status code: 503 Service Unavailable: ...".
fn status_of(error: &object_store::Error) -> Option<u16> {
    const MARK: &str = "status code: ";
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if let Some(at) = text.find(MARK) {
            let digits: String =
                text[at + MARK.len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(code) = digits.parse() {
                return Some(code);
            }
        }
        if text.contains("<Code>SlowDown</Code>") {
            return Some(503);
        }
        cause = e.source();
    }
    None
}

/// The whole cause chain on one line, for error messages.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}
