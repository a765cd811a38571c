//! The autotuner against the simulated store, in simulated time: the grid of
//! per-connection bandwidth × time to first byte × link, rate-capped stores,
//! a cap that lifts, and many controllers sharing one rate-capped store.
//!
//! `cargo test --release --test autotune_grid -- --nocapture` prints the
//! tables (copied into docs/AUTOTUNE.md).

use stoker::autotune::sim_store::{SimConfig, SimTrace, StoreModel, simulate, static_client};
use stoker::autotune::{ControllerConfig, RateLimiterConfig};

const MB: f64 = 1e6;
const GBPS: f64 = 1e9 / 8.0;

/// The simulated process's memory budget for bytes in flight.
const BUDGET: u64 = 8 << 30;

fn auto() -> ControllerConfig {
    ControllerConfig { max_inflight_bytes: BUDGET, ..ControllerConfig::default() }
}

fn run(model: StoreModel, clients: Vec<ControllerConfig>, secs: f64, limiter: bool) -> SimTrace {
    simulate(&SimConfig {
        model,
        changes: vec![],
        duration_secs: secs,
        clients,
        limiter: limiter.then(RateLimiterConfig::default),
        seed: seed(),
    })
}

/// The simulation's seed: 7, or `STOKER_SIM_SEED` to see which cells another
/// draw of the jitter moves (docs/AUTOTUNE.md quotes seeds 7, 11 and 23).
fn seed() -> u64 {
    std::env::var("STOKER_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7)
}

/// Steady goodput of each static concurrency 1, 2, 4, … up to the budget.
fn statics(model: StoreModel) -> Vec<(usize, f64)> {
    let max = (BUDGET / auto().initial_part_bytes) as usize;
    let mut out = Vec::new();
    let mut c = 1;
    while c <= max {
        let tr = run(model, vec![static_client(c, &auto())], 10.0, false);
        let goodput = tr.goodput_between(4.0, 10.0);
        let gained = out.last().is_none_or(|(_, prev): &(usize, f64)| goodput > 1.01 * prev);
        out.push((c, goodput));
        // Past twice the link and once doubling gains under 1%, more
        // connections change nothing in this model. (Not the link alone:
        // one 400 MB/s connection "fills" 1 Gbps on paper, but its
        // time-to-first-byte gaps leave 13% idle that a second one fills.)
        let part = auto().initial_part_bytes as f64;
        let per_request = part / (model.ttfb_secs + part / model.per_conn_bps);
        if per_request * c as f64 > 2.0 * model.link_bps && !gained {
            break;
        }
        c *= 2;
    }
    out
}

#[test]
fn grid_auto_matches_best_static() {
    let mut table = String::from(
        "| per-conn MB/s | TTFB ms | link Gbps | best static (c, MB/s) | smallest c ≥ 0.9 best | auto @10 s / best | auto steady / best | auto conns | auto part MiB |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut failures = Vec::new();
    let (mut strict, mut cells) = ([0usize; 3], 0usize);
    for per_conn in [25.0, 50.0, 100.0, 400.0] {
        for ttfb_ms in [1.0, 10.0, 30.0, 100.0] {
            for link in [1.0, 10.0, 100.0] {
                let model = StoreModel {
                    per_conn_bps: per_conn * MB,
                    ttfb_secs: ttfb_ms / 1e3,
                    ttfb_jitter: 0.2,
                    link_bps: link * GBPS,
                    rate_cap: None,
                };
                let st = statics(model);
                let (best_c, best) =
                    st.iter().copied().fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
                let smallest =
                    st.iter().find(|(_, g)| *g >= 0.9 * best).map_or(best_c, |(c, _)| *c);
                let tr = run(model, vec![auto()], 40.0, false);
                let cold = tr.goodput_between(8.0, 10.0) / best;
                let steady = tr.goodput_between(20.0, 40.0) / best;
                let conns = tr.late_concurrency;
                let part = tr.settings.last().map_or(0, |s| s.2) >> 20;
                table.push_str(&format!(
                    "| {per_conn} | {ttfb_ms} | {link} | {best_c}, {:.0} | {smallest} | {cold:.3} | {steady:.3} | {conns:.1} | {part} |\n",
                    best / MB
                ));
                let cell = format!("{per_conn} MB/s, {ttfb_ms} ms, {link} Gbps");
                // The targets, counted and printed; see docs/AUTOTUNE.md.
                strict[0] += usize::from(cold >= 0.9);
                strict[1] += usize::from(steady >= 0.95);
                strict[2] += usize::from(conns <= 1.25 * smallest as f64);
                cells += 1;
                // The targets, asserted in every cell (seed 7; the
                // simulation is seeded, so these are exact regression
                // bounds; other seeds miss a few cells, docs/AUTOTUNE.md).
                if cold < 0.9 {
                    failures.push(format!("{cell}: {cold:.2} of best static after 10 s"));
                }
                if steady < 0.95 {
                    failures.push(format!("{cell}: {steady:.2} of best static in steady state"));
                }
                if conns > 1.25 * smallest as f64 {
                    failures.push(format!("{cell}: {conns:.1} connections vs {smallest} static"));
                }
            }
        }
    }
    table.push_str(&format!(
        "\nIssue targets met: ≥ 0.9 of best static after 10 s in {}/{cells} cells, ≥ 0.95 in steady state in {}/{cells}, ≤ 1.25× the connections of the smallest static setting reaching 0.9 of best in {}/{cells}.\n",
        strict[0], strict[1], strict[2]
    ));
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

fn capped(rate: Option<f64>) -> StoreModel {
    StoreModel {
        per_conn_bps: 100.0 * MB,
        ttfb_secs: 0.03,
        ttfb_jitter: 0.2,
        link_bps: 10.0 * GBPS,
        rate_cap: rate,
    }
}

#[test]
fn rate_cap_is_met_with_few_503s() {
    let cap = 50.0;
    // Part size pinned: the request rate must bind.
    let pinned = ControllerConfig { fixed_part_bytes: Some(8 << 20), ..auto() };
    let tr = run(capped(Some(cap)), vec![pinned], 60.0, true);
    let ok = tr.ok_rate_between(30.0, 60.0);
    let bad = tr.throttled_fraction_between(30.0, 60.0);
    println!(
        "rate cap {cap}/s, 8 MiB parts: {ok:.1} accepted/s ({:.2} of cap), {:.2}% 503s after 30 s",
        ok / cap,
        bad * 100.0
    );
    assert!(ok >= 0.9 * cap, "{ok}");
    assert!(bad <= 0.01, "{bad}");

    // Part size free: bytes per request grow instead, past every static.
    let best_static = statics(capped(Some(cap))).iter().map(|s| s.1).fold(0.0, f64::max);
    let tr = run(capped(Some(cap)), vec![auto()], 60.0, true);
    let goodput = tr.goodput_between(30.0, 60.0);
    let part = tr.settings.last().map_or(0, |s| s.2);
    println!(
        "rate cap {cap}/s, auto part size: {:.0} MB/s = {:.2}× best static (8 MiB parts), part {} MiB, {:.2}% 503s",
        goodput / MB,
        goodput / best_static,
        part >> 20,
        tr.throttled_fraction_between(30.0, 60.0) * 100.0
    );
    assert!(goodput >= 0.95 * best_static);
    assert!(tr.throttled_fraction_between(30.0, 60.0) <= 0.01);
}

#[test]
fn goodput_returns_after_the_cap_lifts() {
    let cfg = SimConfig {
        model: capped(None),
        changes: vec![(20.0, capped(Some(30.0))), (40.0, capped(None))],
        duration_secs: 60.0,
        // Part size pinned, so the cap binds goodput and recovery is the
        // rate limiter's (and the controller's) to make.
        clients: vec![ControllerConfig { fixed_part_bytes: Some(8 << 20), ..auto() }],
        limiter: Some(RateLimiterConfig::default()),
        seed: 3,
    };
    let tr = simulate(&cfg);
    let before = tr.goodput_between(15.0, 20.0);
    let during = tr.goodput_between(30.0, 40.0);
    let after = tr.goodput_between(49.0, 50.0);
    println!(
        "cap lifted at 40 s: {:.0} MB/s before, {:.0} during, {:.0} at 49–50 s ({:.2} of before)",
        before / MB,
        during / MB,
        after / MB,
        after / before
    );
    assert!(after >= 0.9 * before, "{after} vs {before}");
}

#[test]
fn many_controllers_share_a_rate_capped_store_fairly() {
    let cap = 2000.0;
    let model = StoreModel {
        per_conn_bps: 50.0 * MB,
        ttfb_secs: 0.02,
        ttfb_jitter: 0.2,
        link_bps: 100.0 * GBPS,
        rate_cap: Some(cap),
    };
    let mut lines = String::from(
        "| controllers | accepted/s / cap | 503s | Jain fairness |\n| ---: | ---: | ---: | ---: |\n",
    );
    let mut failures = Vec::new();
    for n in [1, 10, 100, 1000] {
        let client = ControllerConfig {
            fixed_part_bytes: Some(1 << 20),
            max_inflight_bytes: 1 << 30,
            ..auto()
        };
        let tr = run(model, vec![client; n], 60.0, true);
        let ok = tr.ok_rate_between(30.0, 60.0) / cap;
        let bad = tr.throttled_fraction_between(30.0, 60.0);
        let jain = tr.fairness_between(30.0, 60.0);
        lines.push_str(&format!("| {n} | {ok:.3} | {:.2}% | {jain:.3} |\n", bad * 100.0));
        if ok < 0.9 || bad > 0.02 || jain < 0.95 {
            failures.push(n);
        }
    }
    println!("{lines}");
    assert!(failures.is_empty(), "{lines}");
}
