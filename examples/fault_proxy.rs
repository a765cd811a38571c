//! The tests' fault-injecting proxy as a program, for long runs and
//! measurements outside the test suite (`scripts/soak`, docs/RELIABILITY.md).
//!
//! ```sh
//! # every 100th range GET faulted, the ten kinds of the fault matrix in turn
//! # (500, 502, 503, 429, 503 + Retry-After, cut headers, cut body, stall,
//! # a 200 carrying an XML error, a wrong Content-Range):
//! cargo run --release --example fault_proxy -- 127.0.0.1:9000 --fault-every 100
//! # every 50th request refused with 503 SlowDown and Retry-After: 1 (2%):
//! cargo run --release --example fault_proxy -- 127.0.0.1:9000 --refuse-every 50 --retry-after 1
//! # every request refused from 10 s to 70 s after start (a 60 s storm):
//! cargo run --release --example fault_proxy -- 127.0.0.1:9000 --storm 10 70
//! # every 100th reply slowed to a trickle after 600 bytes (or stalled):
//! cargo run --release --example fault_proxy -- 127.0.0.1:9000 --slow-every 100
//! ```
//!
//! Prints `listening on ADDR` first; on SIGTERM or Ctrl-C, one JSON line
//! (faults by kind, requests seen, refused), then exits.

#[path = "../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: fault_proxy UPSTREAM [--fault-every N] [--refuse-every N] [--retry-after S] \
         [--storm FROM_S TO_S] [--ttfb-ms MS] [--slow-every N] [--stall-every N]"
    );
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(arg: Option<String>) -> T {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream: SocketAddr = num(args.next());
    let mut cfg = proxy::ProxyConfig::fast();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--fault-every" => cfg.fault_every = Some(num::<u64>(args.next()).max(1)),
            "--refuse-every" => cfg.refuse_every = Some(num::<u64>(args.next()).max(1)),
            "--retry-after" => cfg.retry_after = Some(num(args.next())),
            "--storm" => {
                let (from, to): (f64, f64) = (num(args.next()), num(args.next()));
                cfg.storm = Some((Duration::from_secs_f64(from), Duration::from_secs_f64(to)));
            }
            "--ttfb-ms" => cfg.ttfb = Duration::from_secs_f64(num::<f64>(args.next()) / 1e3),
            "--slow-every" => cfg.slow_every = Some(num::<u64>(args.next()).max(1)),
            "--stall-every" => cfg.stall_every = Some(num::<u64>(args.next()).max(1)),
            _ => usage(),
        }
    }
    let p = proxy::Proxy::start(upstream, cfg).await;
    println!("listening on {}", p.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let faults = p.faults.lock().map(|f| f.clone()).unwrap_or_default();
    let mut fields: Vec<String> = faults.iter().map(|(k, n)| format!("\"{k:?}\": {n}")).collect();
    fields.sort();
    let (seen, refused) = p
        .arrivals
        .lock()
        .map(|a| (a.len(), a.iter().filter(|(_, refused, _)| *refused).count()))
        .unwrap_or_default();
    println!(
        "{{\"faults\": {{{}}}, \"requests\": {seen}, \"refused\": {refused}}}",
        fields.join(", ")
    );
    Ok(())
}
