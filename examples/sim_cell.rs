//! One cell of the autotuner's simulated grid, traced: what each static
//! concurrency gets, then how the controller moves and what goodput it gets,
//! second by second (40 s, as the grid's steady state).
//!
//! ```sh
//! cargo run --release --example sim_cell -- 50 30 10   # MB/s per connection, TTFB ms, link Gbps
//! STOKER_SIM_SEED=11 cargo run --release --example sim_cell -- 50 100 10   # another draw
//! ```

use stoker::autotune::ControllerConfig;
use stoker::autotune::sim_store::{SimConfig, StoreModel, simulate, static_client};

fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (per_conn, ttfb_ms, link_gbps, rate_cap) = match args[..] {
        [a, b, c] => (a, b, c, None),
        [a, b, c, d] => (a, b, c, Some(d)),
        _ => {
            eprintln!("usage: sim_cell PER_CONN_MB_S TTFB_MS LINK_GBPS [RATE_CAP_PER_S]");
            std::process::exit(2);
        }
    };
    let model = StoreModel {
        per_conn_bps: per_conn * 1e6,
        ttfb_secs: ttfb_ms / 1e3,
        ttfb_jitter: 0.2,
        link_bps: link_gbps * 1e9 / 8.0,
        rate_cap,
    };
    let client = ControllerConfig { max_inflight_bytes: 8 << 30, ..ControllerConfig::default() };
    let run = |client: ControllerConfig, secs: f64| {
        simulate(&SimConfig {
            model,
            changes: vec![],
            duration_secs: secs,
            clients: vec![client],
            limiter: rate_cap.map(|_| stoker::autotune::RateLimiterConfig::default()),
            limiter_per_client: false,
            seed: std::env::var("STOKER_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7),
        })
    };
    println!("static concurrency: MB/s over 4–10 s");
    for c in std::iter::successors(Some(1), |c| Some(c * 2)).take_while(|c| *c <= 1024) {
        let tr = run(static_client(c, &client), 10.0);
        print!("{c}: {:.0}  ", tr.goodput_between(4.0, 10.0) / 1e6);
    }
    println!();
    let tr = run(client, 40.0);
    println!("changes (time s, concurrency, part, phase):");
    let mut last = None;
    for (t, c, part, phase) in &tr.settings {
        if last != Some((*c, *part, *phase)) {
            print!("({t:.2}, {c}, {}MiB, {phase:?}) ", part >> 20);
            last = Some((*c, *part, *phase));
        }
    }
    println!("\ngoodput MB/s per second:");
    for i in 0..40 {
        print!("{:.0} ", tr.goodput_between(f64::from(i), f64::from(i) + 1.0) / 1e6);
    }
    println!("\nmean concurrency limit over 20–40 s: {:.1}", tr.late_concurrency);
}
