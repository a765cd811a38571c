//! A latency-, bandwidth- and rate-injecting TCP proxy for HTTP/1.1, in
//! front of the test S3 server (this kernel has no netem).
//!
//! Per request: the request head is held for `ttfb` before it is forwarded
//! (so the reply's first byte comes that much later); if requests arrive
//! faster than `rate_cap` per second, the proxy answers 503 SlowDown itself
//! (with `Retry-After` when asked to: S3 sends none, B2 and Azure do);
//! with `refuse_every: n`, it refuses every n-th request too, whatever the
//! rate (a store's scattered 503s).
//! Per connection: replies flow no faster than `bytes_per_s`.
//! Assumes what the object_store client does: one request at a time per
//! connection, bodies only with a Content-Length.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex as AsyncMutex;

/// What the proxy injects.
#[derive(Debug, Clone, Copy)]
pub struct ProxyConfig {
    pub ttfb: Duration,
    pub bytes_per_s: f64,
    pub rate_cap: Option<f64>,
    /// Seconds for the 503's `Retry-After` header (none: no header).
    pub retry_after: Option<u32>,
    /// Refuse every n-th request (503 SlowDown), whatever the rate.
    pub refuse_every: Option<u64>,
    /// Refuse every request from `.0` to `.1` after the proxy started (a
    /// SlowDown storm, or an outage).
    pub storm: Option<(Duration, Duration)>,
    /// Stall every n-th reply: its first 600 bytes flow, then nothing more
    /// on that connection until the client gives up on it.
    pub stall_every: Option<u64>,
    /// Slow every n-th reply: its first 600 bytes flow, then 100 bytes
    /// every 100 ms (1 KB/s) on that connection from then on: never quiet
    /// long enough to be a stall.
    pub slow_every: Option<u64>,
    /// Every n-th range GET gets a fault, the kinds of [`Fault::ALL`] in
    /// turn (the fault matrix).
    pub fault_every: Option<u64>,
}

/// What the fault matrix injects into a range GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    Status500,
    Status502,
    SlowDown503,
    TooMany429,
    /// 503 SlowDown with `Retry-After: 1`.
    SlowDownRetryAfter,
    /// The reply is cut (FIN) inside its status line or headers.
    CutHeaders,
    /// The reply is cut (FIN) after 600 bytes of it (inside the body of
    /// a 1,000-byte part: the headers are ~350).
    CutBody,
    /// After 600 bytes nothing more comes; the connection stays open.
    Stall,
    /// `200 OK` carrying an S3 XML error document instead of the range.
    XmlError200,
    /// `206` whose Content-Range is one byte off what was asked.
    WrongContentRange,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Status500,
        Fault::Status502,
        Fault::SlowDown503,
        Fault::TooMany429,
        Fault::SlowDownRetryAfter,
        Fault::CutHeaders,
        Fault::CutBody,
        Fault::Stall,
        Fault::XmlError200,
        Fault::WrongContentRange,
    ];
}

impl ProxyConfig {
    /// 5 ms to first byte, 200 MB/s per connection, nothing refused.
    pub fn fast() -> ProxyConfig {
        ProxyConfig {
            ttfb: Duration::from_millis(5),
            bytes_per_s: 200e6,
            rate_cap: None,
            retry_after: None,
            refuse_every: None,
            storm: None,
            stall_every: None,
            slow_every: None,
            fault_every: None,
        }
    }
}

/// One request the proxy saw: when, whether it refused it, and its
/// request line plus `Range` (what names a part's retry).
pub type Arrival = (Instant, bool, String);

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub throttled: Arc<AtomicU64>,
    /// When each request head arrived, and whether it was refused.
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Replies stalled, and slowed to a trickle.
    pub stalled: Arc<AtomicU64>,
    pub slowed: Arc<AtomicU64>,
    /// Faults injected, by kind.
    pub faults: Arc<Mutex<std::collections::HashMap<Fault, u64>>>,
    /// When it started (its `storm` counts from here).
    pub started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the proxy saw.
#[derive(Clone)]
struct Log {
    throttled: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Requests seen, for `refuse_every`.
    seen: Arc<AtomicU64>,
    stalled: Arc<AtomicU64>,
    slowed: Arc<AtomicU64>,
    started: Instant,
    /// Range GETs seen, for `fault_every`, and faults by kind.
    ranged: Arc<AtomicU64>,
    faults: Arc<Mutex<std::collections::HashMap<Fault, u64>>>,
}

/// Token bucket of the rate cap: 100 ms of burst.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, cfg: ProxyConfig) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let throttled = Arc::new(AtomicU64::new(0));
        let bucket = Arc::new(Mutex::new(Bucket { tokens: 1.0, last: Instant::now() }));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let stalled = Arc::new(AtomicU64::new(0));
        let slowed = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let log = Log {
            throttled: throttled.clone(),
            arrivals: arrivals.clone(),
            seen: Arc::new(AtomicU64::new(0)),
            stalled: stalled.clone(),
            slowed: slowed.clone(),
            started,
            ranged: Arc::new(AtomicU64::new(0)),
            faults: faults.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (bucket, log) = (bucket.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream, cfg, bucket, log).await;
                });
            }
        });
        Proxy { addr, throttled, arrivals, stalled, slowed, faults, started, task }
    }
}

fn admit(bucket: &Mutex<Bucket>, cap: Option<f64>) -> bool {
    let Some(cap) = cap else { return true };
    let mut b = bucket.lock().expect("bucket");
    let now = Instant::now();
    b.tokens =
        (b.tokens + cap * now.duration_since(b.last).as_secs_f64()).min((cap * 0.1).max(1.0));
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// Writes `bytes` at 1 KB/s, 100 bytes at a time: a connection that never
/// goes quiet and never gets anywhere.
async fn trickle_out(
    writer: &AsyncMutex<tokio::net::tcp::OwnedWriteHalf>,
    bytes: &[u8],
) -> std::io::Result<()> {
    for piece in bytes.chunks(100) {
        writer.lock().await.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The reply the proxy sends itself for `fault`, instead of forwarding
/// (`None`: the fault is done to the server's reply).
fn canned_reply(fault: Fault, range: &str) -> Option<Vec<u8>> {
    let xml = |code: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
        )
    };
    let reply = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    Some(match fault {
        Fault::Status500 => reply("500 Internal Server Error", "", &xml("InternalError")),
        Fault::Status502 => reply("502 Bad Gateway", "", ""),
        Fault::SlowDown503 => reply("503 Slow Down", "", SLOW_DOWN),
        Fault::TooMany429 => reply("429 Too Many Requests", "", &xml("TooManyRequests")),
        Fault::SlowDownRetryAfter => reply("503 Slow Down", "Retry-After: 1\r\n", SLOW_DOWN),
        Fault::XmlError200 => reply("200 OK", "", &xml("InternalError")),
        Fault::WrongContentRange => {
            // "range: bytes=a-b": answer a+1..=b+1 with as many bytes.
            let (a, b) = range
                .trim_start_matches("range:")
                .trim()
                .trim_start_matches("bytes=")
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))?;
            let body = "X".repeat((b - a + 1) as usize);
            let extra = format!("Content-Range: bytes {}-{}/{}\r\n", a + 1, b + 1, b + 1_000_000);
            reply("206 Partial Content", &extra, &body)
        }
        Fault::CutHeaders | Fault::CutBody | Fault::Stall => return None,
    })
}

/// Where a cut or stalled reply stops: past the headers, inside the body.
const CUT_AT: u64 = 600;

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    cfg: ProxyConfig,
    bucket: Arc<Mutex<Bucket>>,
    log: Log,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut client_rx, client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let client_tx = Arc::new(AsyncMutex::new(client_tx));

    // Replies: paced to the per-connection bandwidth. A connection banks
    // no credit while idle (once it did, since its start: a pooled
    // connection then sent its next reply at loopback speed), only 5 ms,
    // so that a timer that wakes late does not lower the rate.
    let writer = client_tx.clone();
    // Bytes relayed so far, and where to stop relaying (a stalled reply).
    let relayed = Arc::new(AtomicU64::new(0));
    let stall_at = Arc::new(AtomicU64::new(u64::MAX));
    // At `stall_at`: true, close the connection (FIN); false, go quiet
    // (or, with `slow`, trickle from then on).
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (relayed_w, stall_at_r, cut_r, slow_r) =
        (relayed.clone(), stall_at.clone(), cut.clone(), slow.clone());
    let replies = tokio::spawn(async move {
        const SLACK: Duration = Duration::from_millis(5);
        let mut buf = vec![0u8; 64 << 10];
        let mut free_at = Instant::now();
        let mut trickle = false;
        loop {
            let mut n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if trickle {
                if trickle_out(&writer, &buf[..n]).await.is_err() {
                    return;
                }
                continue;
            }
            let read = n;
            let at = relayed_w.load(Ordering::Relaxed);
            let stop = stall_at_r.load(Ordering::Relaxed);
            let stalls = at + n as u64 >= stop;
            if stalls {
                n = stop.saturating_sub(at) as usize;
            }
            relayed_w.fetch_add(n as u64, Ordering::Relaxed);
            let now = Instant::now();
            free_at = free_at.max(now.checked_sub(SLACK).unwrap_or(now))
                + Duration::from_secs_f64(n as f64 / cfg.bytes_per_s);
            if free_at > now {
                tokio::time::sleep_until(free_at.into()).await;
            }
            if writer.lock().await.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if stalls && slow_r.load(Ordering::Relaxed) {
                trickle = true;
                if trickle_out(&writer, &buf[n..read]).await.is_err() {
                    return;
                }
                continue;
            }
            if stalls {
                if cut_r.load(Ordering::Relaxed) {
                    let _ = writer.lock().await.shutdown().await;
                    return;
                }
                // Nothing more on this connection; the request loop ends
                // this task when the client hangs up.
                std::future::pending::<()>().await;
            }
        }
    });

    // Requests: one head at a time (plus its Content-Length body).
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let head_end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                replies.abort();
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while pending.len() < head_end + body_len {
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let request: Vec<u8> = pending.drain(..head_end + body_len).collect();
        let nth = log.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let scattered = cfg.refuse_every.is_some_and(|n| nth.is_multiple_of(n));
        let since = log.started.elapsed();
        let storm = cfg.storm.is_some_and(|(from, to)| since >= from && since < to);
        let admitted = !scattered && !storm && admit(&bucket, cfg.rate_cap);
        let line = head.lines().next().unwrap_or_default();
        let range = head.lines().find(|l| l.starts_with("range:")).unwrap_or_default();
        let name = format!("{line} {range}");
        log.arrivals.lock().expect("arrivals").push((Instant::now(), !admitted, name));
        if !admitted {
            log.throttled.fetch_add(1, Ordering::Relaxed);
            let retry_after =
                cfg.retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            let reply = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{retry_after}\r\n{SLOW_DOWN}",
                SLOW_DOWN.len()
            );
            client_tx.lock().await.write_all(reply.as_bytes()).await?;
            continue;
        }
        let fault = if range.is_empty() {
            None
        } else {
            let k = log.ranged.fetch_add(1, Ordering::Relaxed) + 1;
            cfg.fault_every.filter(|n| k.is_multiple_of(*n)).map(|n| {
                let kind = Fault::ALL[((k / n - 1) % Fault::ALL.len() as u64) as usize];
                *log.faults.lock().expect("faults").entry(kind).or_default() += 1;
                kind
            })
        };
        if let Some(reply) = fault.and_then(|f| canned_reply(f, range)) {
            client_tx.lock().await.write_all(&reply).await?;
            continue;
        }
        if let Some(f @ (Fault::CutHeaders | Fault::CutBody | Fault::Stall)) = fault {
            let keep = if f == Fault::CutHeaders { 40 } else { CUT_AT };
            cut.store(f != Fault::Stall, Ordering::Relaxed);
            stall_at.store(relayed.load(Ordering::Relaxed) + keep, Ordering::Relaxed);
        }
        if cfg.stall_every.is_some_and(|n| nth.is_multiple_of(n)) {
            log.stalled.fetch_add(1, Ordering::Relaxed);
            // Every earlier reply is complete (one request at a time).
            stall_at.store(relayed.load(Ordering::Relaxed) + CUT_AT, Ordering::Relaxed);
        }
        if cfg.slow_every.is_some_and(|n| nth.is_multiple_of(n)) {
            log.slowed.fetch_add(1, Ordering::Relaxed);
            slow.store(true, Ordering::Relaxed);
            stall_at.store(relayed.load(Ordering::Relaxed) + CUT_AT, Ordering::Relaxed);
        }
        tokio::time::sleep(cfg.ttfb).await;
        server_tx.write_all(&request).await?;
    }
}
