//! The autotuner against the simulated store, in simulated time: the grid of
//! per-connection bandwidth × time to first byte × link, rate-capped stores,
//! a cap that lifts, and many controllers sharing one rate-capped store.
//!
//! `cargo test --release --test autotune_grid -- --nocapture` prints the
//! tables (copied into docs/AUTOTUNE.md).

use stoker::autotune::sim_store::{SimConfig, SimTrace, StoreModel, simulate, static_client};
use stoker::autotune::{ControllerConfig, RateLimiterConfig};
use stoker::cli::report::median;

const MB: f64 = 1e6;
const GBPS: f64 = 1e9 / 8.0;

/// The simulated process's memory budget for bytes in flight.
const BUDGET: u64 = 8 << 30;

fn auto() -> ControllerConfig {
    ControllerConfig { max_inflight_bytes: BUDGET, ..ControllerConfig::default() }
}

fn run(model: StoreModel, clients: Vec<ControllerConfig>, secs: f64, limiter: bool) -> SimTrace {
    run_seeded(model, clients, secs, limiter, seed())
}

fn run_seeded(
    model: StoreModel,
    clients: Vec<ControllerConfig>,
    secs: f64,
    limiter: bool,
    seed: u64,
) -> SimTrace {
    simulate(&SimConfig {
        model,
        changes: vec![],
        duration_secs: secs,
        clients,
        limiter: limiter.then(RateLimiterConfig::default),
        limiter_per_client: false,
        seed,
    })
}

/// The simulation's seed for the single-draw tests: 7, or `STOKER_SIM_SEED`.
fn seed() -> u64 {
    std::env::var("STOKER_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7)
}

/// The draws of the jitter the grid runs, 1 to 7, or `STOKER_SIM_SEEDS`
/// (comma-separated). Its claims are about a typical draw, the median per
/// cell, not one seed: one seed that met every target hid a cell that
/// missed in 13 draws of 14.
fn grid_seeds() -> Vec<u64> {
    std::env::var("STOKER_SIM_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect::<Vec<u64>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| (1..=7).collect())
}

/// Steady goodput of each static concurrency 1, 2, 4, … up to the budget.
fn statics(model: StoreModel, seed: u64) -> Vec<(usize, f64)> {
    let max = (BUDGET / auto().initial_part_bytes) as usize;
    let mut out = Vec::new();
    let mut c = 1;
    while c <= max {
        let tr = run_seeded(model, vec![static_client(c, &auto())], 10.0, false, seed);
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

/// One draw of one cell: auto against the statics of the same draw.
struct Draw {
    best: (usize, f64),
    smallest: usize,
    cold: f64,
    steady: f64,
    conns: f64,
    part_mib: u64,
}

fn draw(model: StoreModel, seed: u64) -> Draw {
    let st = statics(model, seed);
    let best = st.iter().copied().fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let smallest = st.iter().find(|(_, g)| *g >= 0.9 * best.1).map_or(best.0, |(c, _)| *c);
    let tr = run_seeded(model, vec![auto()], 40.0, false, seed);
    Draw {
        best,
        smallest,
        cold: tr.goodput_between(8.0, 10.0) / best.1,
        steady: tr.goodput_between(20.0, 40.0) / best.1,
        conns: tr.late_concurrency,
        part_mib: tr.settings.last().map_or(0, |s| s.2) >> 20,
    }
}

/// The three targets for one draw: ≥ 0.9 of best static after
/// 10 s, ≥ 0.95 in steady state, ≤ 1.25× the connections of the smallest
/// static setting reaching 0.9 of best.
fn met(cold: f64, steady: f64, conns_ratio: f64) -> [bool; 3] {
    [cold >= 0.9, steady >= 0.95, conns_ratio <= 1.25]
}

#[test]
fn grid_auto_matches_best_static() {
    let seeds = grid_seeds();
    let mut table = format!(
        "Medians over {} draws (seeds {seeds:?}); best static and smallest c from the first.\n\n\
         | per-conn MB/s | TTFB ms | link Gbps | best static (c, MB/s) | smallest c ≥ 0.9 best | auto @10 s / best | auto steady / best | auto conns | auto part MiB | draws missing (10 s, steady, conns) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        seeds.len()
    );
    let mut failures = Vec::new();
    let (mut typical, mut every, mut cells) = ([0usize; 3], [0usize; 3], 0usize);
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
                let draws: Vec<Draw> = seeds.iter().map(|&s| draw(model, s)).collect();
                let mut missing = [0usize; 3];
                for d in &draws {
                    let m = met(d.cold, d.steady, d.conns / d.smallest as f64);
                    for i in 0..3 {
                        missing[i] += usize::from(!m[i]);
                        every[i] += usize::from(m[i]);
                    }
                }
                let cold = median(draws.iter().map(|d| d.cold).collect());
                let steady = median(draws.iter().map(|d| d.steady).collect());
                let conns = median(draws.iter().map(|d| d.conns).collect());
                let conns_ratio =
                    median(draws.iter().map(|d| d.conns / d.smallest as f64).collect());
                let first = &draws[0];
                table.push_str(&format!(
                    "| {per_conn} | {ttfb_ms} | {link} | {}, {:.0} | {} | {cold:.3} | {steady:.3} | {conns:.1} | {} | {}, {}, {} |\n",
                    first.best.0,
                    first.best.1 / MB,
                    first.smallest,
                    first.part_mib,
                    missing[0],
                    missing[1],
                    missing[2],
                ));
                let cell = format!("{per_conn} MB/s, {ttfb_ms} ms, {link} Gbps");
                let m = met(cold, steady, conns_ratio);
                for i in 0..3 {
                    typical[i] += usize::from(m[i]);
                }
                // The targets in every cell, for the median draw.
                if !m[0] {
                    failures.push(format!("{cell}: median {cold:.2} of best static after 10 s"));
                }
                if !m[1] {
                    failures.push(format!("{cell}: median {steady:.2} of best static steady"));
                }
                if !m[2] {
                    failures.push(format!(
                        "{cell}: median {conns_ratio:.2}× the smallest static's connections"
                    ));
                }
                cells += 1;
            }
        }
    }
    let runs = cells * seeds.len();
    table.push_str(&format!(
        "\nIssue targets met by the median draw: ≥ 0.9 of best static after 10 s in {}/{cells} cells, ≥ 0.95 in steady state in {}/{cells}, ≤ 1.25× the connections of the smallest static setting reaching 0.9 of best in {}/{cells}.\n\
         By every draw: {}/{runs}, {}/{runs}, {}/{runs}.\n",
        typical[0], typical[1], typical[2], every[0], every[1], every[2]
    ));
    println!("{table}");
    // Single draws miss a few cells (jitter keeps requests in cohorts for
    // seconds in this fluid model; docs/AUTOTUNE.md): a regression bound.
    for (i, name) in ["10 s", "steady", "connections"].iter().enumerate() {
        if (every[i] as f64) < 0.96 * runs as f64 {
            failures.push(format!("{name}: only {}/{runs} draws meet the target", every[i]));
        }
    }
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
    let best_static = statics(capped(Some(cap)), seed()).iter().map(|s| s.1).fold(0.0, f64::max);
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
        limiter_per_client: false,
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
    let model = capped_store(cap, 100.0 * GBPS);
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

/// A store of 50 MB/s connections, 20 ms to first byte, capped at `cap`
/// requests per second behind a link of `link_bps`.
fn capped_store(cap: f64, link_bps: f64) -> StoreModel {
    StoreModel {
        per_conn_bps: 50.0 * MB,
        ttfb_secs: 0.02,
        ttfb_jitter: 0.2,
        link_bps,
        rate_cap: Some(cap),
    }
}

/// 1,000 independent daemons (each its own limiter and controller, as on
/// 1,000 nodes) on one store capped in requests per second, with a link so
/// wide that the cap binds at any part size, all started at once (a
/// training job's launch): ≥ 0.9 of the cap accepted, ≤ 2% 503s and Jain
/// fairness ≥ 0.95 over 30–60 s, and parts grow. Seeds 1–7: 1.000 of the
/// cap, 1.81–1.88%, Jain 0.959–0.963 (docs/AUTOTUNE.md).
#[test]
fn a_fleet_of_independent_daemons_shares_a_request_cap() {
    let cap = 2000.0;
    let model = capped_store(cap, 10_000.0 * GBPS);
    let n = 1000;
    let client =
        ControllerConfig { initial_part_bytes: 1 << 20, max_inflight_bytes: 1 << 30, ..auto() };
    let tr = simulate(&SimConfig {
        model,
        changes: vec![],
        duration_secs: 60.0,
        clients: vec![client; n],
        limiter: Some(RateLimiterConfig::default()),
        limiter_per_client: true,
        seed: seed(),
    });
    let ok = tr.ok_rate_between(30.0, 60.0) / cap;
    let bad = tr.throttled_fraction_between(30.0, 60.0);
    let jain = tr.fairness_between(30.0, 60.0);
    let part = tr.settings.last().map_or(0, |s| s.2);
    let gbps = tr.goodput_between(30.0, 60.0) / 1e9;
    // Where the unfairness is: requests per daemon, and part sizes.
    let mut oks: Vec<f64> =
        tr.client_ok.iter().map(|v| v[30..60].iter().sum::<f64>() / 30.0).collect();
    oks.sort_by(f64::total_cmp);
    let mut parts = tr.final_part_bytes.clone();
    parts.sort_unstable();
    let mut conc = tr.final_concurrency.clone();
    conc.sort_unstable();
    let mut rates: Vec<f64> =
        tr.final_rate_limits.iter().map(|r| r.unwrap_or(f64::INFINITY)).collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "limiter rates p0/p10/p50/p90/p100: {:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
        rates[0],
        rates[(n - 1) / 10],
        rates[(n - 1) / 2],
        rates[(n - 1) * 9 / 10],
        rates[n - 1]
    );
    let q = |p: usize| (n - 1) * p / 100;
    println!(
        "answered/s per daemon p0/p10/p50/p90/p100: {:.2}/{:.2}/{:.2}/{:.2}/{:.2} (Jain {:.3}); \
         parts MiB p0/p50/p100: {}/{}/{}; concurrency p0/p10/p50/p90/p100: {}/{}/{}/{}/{}",
        oks[0],
        oks[q(10)],
        oks[q(50)],
        oks[q(90)],
        oks[n - 1],
        tr.request_fairness_between(30.0, 60.0),
        parts[0] >> 20,
        parts[q(50)] >> 20,
        parts[n - 1] >> 20,
        conc[0],
        conc[q(10)],
        conc[q(50)],
        conc[q(90)],
        conc[n - 1]
    );
    println!(
        "fleet of {n} daemons, cap {cap}/s: {ok:.3} of the cap accepted, {:.2}% 503s, Jain {jain:.3}, \
         daemon 0's part {} MiB, {gbps:.2} GB/s in all (30–60 s)",
        bad * 100.0,
        part >> 20
    );
    assert!(ok >= 0.9, "accepted {ok:.3} of the cap");
    assert!(part > 1 << 20, "parts did not grow where the request rate binds: {part}");
    assert!(bad <= 0.02, "{:.2}% 503s", bad * 100.0);
    assert!(jain >= 0.95, "Jain {jain:.3}");
}

/// A store that refuses nearly everything for the first 0.2 s of a run (a
/// cap of one request a second, then none): a lone process must not be
/// held at the bottom afterwards. Guards against the fleet's "equal start"
/// (every node refused before it sent 20 requests starts again from one
/// request a second; docs/AUTOTUNE.md): it met the fleet's three targets
/// and left this process at 0.01 of its goodput, since after such a start
/// it hears the same silence as a node of a fleet.
#[test]
fn a_lone_process_shrugs_off_refusals_at_start() {
    let free = SimConfig {
        model: capped(None),
        changes: vec![],
        duration_secs: 30.0,
        clients: vec![ControllerConfig { fixed_part_bytes: Some(8 << 20), ..auto() }],
        limiter: Some(RateLimiterConfig::default()),
        limiter_per_client: false,
        seed: seed(),
    };
    let hiccup =
        SimConfig { model: capped(Some(1.0)), changes: vec![(0.2, capped(None))], ..free.clone() };
    let want = simulate(&free).goodput_between(10.0, 30.0);
    let tr = simulate(&hiccup);
    let got = tr.goodput_between(10.0, 30.0);
    let refused: f64 = tr.throttled_per_sec.iter().sum();
    println!(
        "refused at start ({refused} replies): {:.0} MB/s at 10–30 s against {:.0} without (×{:.2})",
        got / MB,
        want / MB,
        got / want
    );
    assert!(refused >= 3.0, "the store refused only {refused}: no hiccup to recover from");
    assert!(got >= 0.9 * want, "{:.0} MB/s against {:.0}", got / MB, want / MB);
}
