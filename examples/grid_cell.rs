//! One cell of the autotuner's simulated grid, traced: the static
//! concurrencies, then auto's settings and goodput second by second.
//!
//! `cargo run --release --example grid_cell -- PER_CONN_MBPS TTFB_MS LINK_GBPS`

use stoker::autotune::ControllerConfig;
use stoker::autotune::sim_store::{SimConfig, StoreModel, simulate, static_client};

fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [per_conn, ttfb_ms, link] = args[..] else {
        eprintln!("usage: grid_cell PER_CONN_MBPS TTFB_MS LINK_GBPS");
        std::process::exit(2);
    };
    let model = StoreModel {
        per_conn_bps: per_conn * 1e6,
        ttfb_secs: ttfb_ms / 1e3,
        ttfb_jitter: 0.2,
        link_bps: link * 1e9 / 8.0,
        rate_cap: None,
    };
    let auto = ControllerConfig { max_inflight_bytes: 8 << 30, ..ControllerConfig::default() };
    let run = |client: ControllerConfig, secs: f64| {
        simulate(&SimConfig {
            model,
            changes: vec![],
            duration_secs: secs,
            clients: vec![client],
            limiter: None,
            seed: 7,
        })
    };
    let mut c = 1;
    while c <= 1024 {
        let tr = run(static_client(c, &auto), 10.0);
        println!("static {c:>5}: {:>8.1} MB/s", tr.goodput_between(4.0, 10.0) / 1e6);
        c *= 2;
    }
    let tr = run(auto, 40.0);
    let mut last = None;
    for (t, c, part, phase) in &tr.settings {
        if last != Some((*c, *part)) {
            println!("{t:>7.3} s: c {c:>5}, part {} MiB, {phase:?}", part >> 20);
            last = Some((*c, *part));
        }
    }
    for s in 0..40 {
        let g = tr.goodput_between(s as f64, s as f64 + 1.0) / 1e6;
        print!("{g:.0} ");
    }
    println!("\nauto conns over 20–40 s: {:.1}", tr.late_concurrency);
}
