//! How many requests in flight keep the path busy despite their gaps.
//!
//! A request first waits for its first byte (mean `t`, moving nothing),
//! then transfers (`s` uncontended). The path carries `m` transferring
//! requests at full speed (`m` = path bandwidth / one request's bandwidth;
//! below one when a single request could outrun the link); beyond that they
//! share it. That is the machine-repairman model, a closed queue with `n`
//! requests, a delay station (the wait) and a station with `m` servers (the
//! path), which has a product-form solution: with `K` requests transferring,
//! `P(K = k) ∝ n!/(n−k)! · (s/t)^k / ∏_{j≤k} min(j, m)`, and the path is
//! busy `E[min(K, m)] / m` of the time.
//!
//! Little's law alone (`n = m·(t + s)/s`) holds only the mean: at a few
//! requests, all of them sit in their gaps at once often enough to idle the
//! path (one 400 MB/s request on 1 Gbps with 100 ms to first byte: three in
//! flight keep it busy 87% of the time, four 95%). Far from the link, where
//! each request is held back by its own bandwidth, it asks for little more
//! than the mean.

/// The smallest `n` that keeps the path busy `fill` of the time, where `m`
/// requests transferring fill it and a request spends `ttfb_share` of its
/// uncontended life waiting for the first byte; 0 when nothing needs to move.
pub fn requests_to_cover(m: f64, ttfb_share: f64, fill: f64) -> usize {
    if m.is_nan() || m <= 0.0 {
        return 0;
    }
    let f = ttfb_share.clamp(1e-6, 0.99);
    // The path is busy at most n(1 − f)/m of the time (every request at
    // full speed): no smaller n can do.
    let first = ((fill * m / (1.0 - f)).floor() as usize).max(1);
    (first..first.saturating_mul(4).max(first + 64))
        .find(|n| busy_share(*n, (1.0 - f) / f, m) >= fill)
        .unwrap_or(first.saturating_mul(4))
}

/// `E[min(K, m)] / m` for `n` requests whose transfer / wait ratio is `r`.
/// The weights are walked in log space (at hundreds of requests they
/// overflow), summed relative to the largest so far (rescaling when a
/// larger one comes), in one pass without allocating.
fn busy_share(n: usize, r: f64, m: f64) -> f64 {
    let ln_r = r.ln();
    // k = 0: weight 1 (log 0), nothing transferring.
    let (mut ln_w, mut top, mut total, mut busy) = (0.0f64, 0.0f64, 1.0f64, 0.0f64);
    for k in 1..=n {
        ln_w += ((n - k + 1) as f64).ln() + ln_r - (k as f64).min(m).ln();
        if ln_w > top {
            let scale = (top - ln_w).exp();
            (total, busy, top) = (total * scale, busy * scale, ln_w);
        }
        let w = (ln_w - top).exp();
        total += w;
        busy += w * (k as f64).min(m);
    }
    busy / total / m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fast_request_on_a_slow_link_needs_company_when_gaps_are_long() {
        // 100 ms to first byte, 67 ms moving 8 MiB at 1 Gbps (f = 0.6):
        // 1 − P(idle) with P(idle) = 1 / Σ n!/(n−k)! (s/t)^k.
        assert!((busy_share(3, 0.67, 1.0) - 0.867).abs() < 0.005);
        assert!((busy_share(4, 0.67, 1.0) - 0.953).abs() < 0.005);
        assert_eq!(requests_to_cover(1.0, 0.6, 0.95), 4);
        // 1 ms to first byte: one request is enough.
        assert_eq!(requests_to_cover(1.0, 0.015, 0.95), 1);
    }

    #[test]
    fn without_sharing_it_is_a_binomial_count() {
        // m ≥ n: every request runs at full speed, K ~ Binomial(n, 1 − f).
        // n = 2, f = 0.5: E[K] = 1, share 1/m.
        assert!((busy_share(2, 1.0, 10.0) - 0.1).abs() < 1e-12);
        // Hundreds of requests: no overflow.
        assert!((busy_share(800, 0.7 / 0.3, 1e9) * 1e9 - 560.0).abs() < 1e-6);
    }

    #[test]
    fn many_requests_need_little_more_than_the_mean() {
        let n = requests_to_cover(500.0, 0.03, 0.95);
        let mean = 500.0 / 0.97;
        assert!((n as f64) < mean * 1.01 && (n as f64) > 0.95 * mean, "{n}");
        assert_eq!(requests_to_cover(0.0, 0.3, 0.95), 0);
    }
}
