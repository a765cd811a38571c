//! The ring socket: where a client fetches its session's memfd.
//!
//! HTTP/2 frames cannot carry descriptors, so they travel over a second
//! Unix socket next to the gRPC one (`<socket>.ring`, same mode):
//!
//! ```text
//!  client ── "<session> <fd_token>\n" ──▶ daemon   (token from RingInfo, uid checked with SO_PEERCRED)
//!  client ◀── sendmsg(payload JSON, SCM_RIGHTS memfd) ── daemon
//!  or     ◀── "error: …" (no descriptor)
//! ```

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::service::DaemonState;
use crate::ring::{RingError, send_fd};

/// The longest request line read from a ring-socket peer.
const MAX_REQUEST_BYTES: u64 = 1024;

/// Serves descriptor requests until the listener fails.
pub async fn serve(listener: UnixListener, state: Arc<DaemonState>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = hand_over(stream, &state).await {
                        tracing::debug!(error = %e, "ring socket request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "ring socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn hand_over(stream: UnixStream, state: &DaemonState) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // A request is a session id and a token (~100 bytes): read at most
    // `MAX_REQUEST_BYTES`, so a peer sending endless bytes without a
    // newline costs a bounded buffer, not the node's memory.
    let mut bounded = (&mut reader).take(MAX_REQUEST_BYTES);
    let read = tokio::time::timeout(Duration::from_secs(5), bounded.read_line(&mut line)).await;
    let mut stream = reader.into_inner();
    if !matches!(read, Ok(Ok(n)) if n > 0 && line.ends_with('\n')) {
        return stream.write_all(b"error: expected '<session> <fd_token>\\n'\n").await;
    }
    let mut words = line.split_whitespace();
    let (id, token) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let session = match state.session(id) {
        Some(s) if s.fd_token == token && (s.uid == uid || uid == 0) => s,
        Some(_) => return stream.write_all(b"error: not your session\n").await,
        None => return stream.write_all(b"error: no such session (it ended)\n").await,
    };
    let payload = serde_json::json!({
        "session": session.id,
        "segment_bytes": session.ring.segment().len(),
        "slots": session.ring.slots().len(),
        "slot_bytes": session.ring.slot_bytes(),
    })
    .to_string();
    stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            send_fd(stream.as_fd(), session.ring.segment().fd(), payload.as_bytes()).map_err(|e| {
                match e {
                    RingError::Os { errno: nix::Error::EAGAIN, .. } => {
                        std::io::ErrorKind::WouldBlock.into()
                    }
                    e => std::io::Error::other(e),
                }
            })
        })
        .await?;
    session.fd_sent.send_replace(true);
    Ok(())
}
