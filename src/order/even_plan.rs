//! An epoch split by samples, not shards: every rank gets the same number
//! (or within one), computed from the shards' sample counts (`index`) by
//! every rank alike, with no coordinator.
//!
//! ```text
//!  shuffled shards:   [ s7: 5 ][ s2: 3 ][ s9: 6 ][ s0: 4 ]    N = 18 samples, W = 4 ranks
//!  positions:          0 ............................ 17
//!  drop (⌊N/W⌋ = 4):  r0 0..4  r1 4..8  r2 8..12  r3 12..16   16, 17 dropped
//!  pad  (⌈N/W⌉ = 5):  r0 0..5  r1 5..10 r2 10..15 r3 15..20   18, 19 repeat 0, 1
//!  none:              r0 0..4  r1 4..9  r2 9..13  r3 13..18   (⌊rN/W⌋: 4 or 5 each)
//! ```
//!
//! A rank's range is contiguous in the epoch's shard order, so it reads
//! whole shards but for at most one at each end (cut at a sample, which a
//! plain `.tar` can be entered at). What `drop` leaves out is the end of
//! the epoch's order and what `pad` repeats its start: both change with the
//! shuffle each epoch, so no sample is always the one left out.

use std::str::FromStr;

use super::epoch_plan::{OrderConfig, shard_order};
use super::reshard::{PlanItem, SampleFilter};

/// What to do with the samples that do not divide evenly among ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Even {
    /// Ranks within one sample of each other (no sample left out or
    /// repeated; batch counts can differ by one).
    #[default]
    None,
    /// Every rank ⌊N/W⌋ samples; the rest of the epoch is not delivered.
    Drop,
    /// Every rank ⌈N/W⌉ samples; the shortfall repeats the epoch's first.
    Pad,
}

impl FromStr for Even {
    type Err = String;
    fn from_str(s: &str) -> Result<Even, String> {
        match s {
            "" | "none" => Ok(Even::None),
            "drop" => Ok(Even::Drop),
            "pad" => Ok(Even::Pad),
            other => Err(format!("--even must be none, drop or pad, not '{other}'")),
        }
    }
}

impl Even {
    pub fn as_str(self) -> &'static str {
        match self {
            Even::None => "none",
            Even::Drop => "drop",
            Even::Pad => "pad",
        }
    }
}

/// What an even split costs one rank in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct EvenTally {
    /// Samples this rank delivers.
    pub samples: u64,
    /// Samples of the epoch no rank delivers (`drop`; the same on every rank).
    pub dropped: u64,
    /// Samples this rank delivers a second time (`pad`).
    pub padded: u64,
}

/// Rank `cfg.rank`'s positions in the epoch's sample sequence of `total`.
fn positions(total: u64, cfg: &OrderConfig, even: Even) -> (u64, u64) {
    let (w, r) = (cfg.world_size.max(1) as u64, cfg.rank as u64);
    match even {
        Even::None => (r * total / w, (r + 1) * total / w),
        Even::Drop => (r * (total / w), (r + 1) * (total / w)),
        Even::Pad => (r * total.div_ceil(w), (r + 1) * total.div_ceil(w)),
    }
}

/// The rank's tally per epoch (the same every epoch: every shard is in
/// every epoch).
pub fn even_tally(counts: &[u32], cfg: &OrderConfig, even: Even) -> EvenTally {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let (a, b) = positions(total, cfg, even);
    let w = cfg.world_size.max(1) as u64;
    EvenTally {
        samples: b - a,
        dropped: if even == Even::Drop { total - w * (total / w) } else { 0 },
        padded: b.saturating_sub(a.max(total)),
    }
}

/// The plan of `cfg.rank` in `epoch`: sample ranges of the epoch's shuffled
/// shard order (`counts[s]`: samples in shard `s`).
pub fn plan_samples(counts: &[u32], epoch: u64, cfg: &OrderConfig, even: Even) -> Vec<PlanItem> {
    let order = shard_order(counts.len(), epoch, cfg);
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let (mut a, b) = positions(total, cfg, even);
    let mut items: Vec<PlanItem> = Vec::new();
    if total == 0 {
        return items;
    }
    // Past the end, positions wrap to the epoch's start (pad).
    while a < b {
        let (lap, at) = (a / total, a % total);
        let lap_end = (lap + 1) * total;
        let end = b.min(lap_end) - lap * total;
        let mut base = 0u64;
        for &s in &order {
            let n = u64::from(counts[s]);
            let (from, to) = (at.max(base), end.min(base + n));
            if from < to {
                let filter = SampleFilter::range((from - base) as u32, (to - base) as u32);
                let filter =
                    if to - base == n && from == base { SampleFilter::ALL } else { filter };
                items.push(PlanItem { shard: s as u32, filter });
            }
            base += n;
            if base >= end {
                break;
            }
        }
        a = b.min(lap_end);
    }
    items
}

/// Samples an item of `share_by_samples` selects of a shard of `count`:
/// its listed ordinals if it has any, else its range cut to the shard
/// (`remaining_ranges` makes items of one kind or the other; an item of
/// both, from elsewhere, counts and is cut as its list).
fn selected(item: &PlanItem, count: u32) -> u64 {
    let f = &item.filter;
    if f.only.is_empty() {
        u64::from(f.to.min(count).saturating_sub(f.from))
    } else {
        f.only.len() as u64
    }
}

/// Rank `cfg.rank`'s share of `items` (what the ranks of an earlier run left,
/// `reshard::remaining_ranges`) split by samples as an epoch is: the items
/// laid end to end, a contiguous range of them per rank. Items are ranges
/// or lists of ordinals, cut at samples.
pub fn share_by_samples(
    items: &[PlanItem],
    counts: &[u32],
    cfg: &OrderConfig,
    even: Even,
) -> (Vec<PlanItem>, EvenTally) {
    let count = |s: u32| counts.get(s as usize).copied().unwrap_or(0);
    let sizes: Vec<u64> = items.iter().map(|i| selected(i, count(i.shard))).collect();
    let total: u64 = sizes.iter().sum();
    let (mut a, b) = positions(total, cfg, even);
    let w = cfg.world_size.max(1) as u64;
    let tally = EvenTally {
        samples: b - a,
        dropped: if even == Even::Drop { total - w * (total / w) } else { 0 },
        padded: b.saturating_sub(a.max(total)),
    };
    let mut out = Vec::new();
    if total == 0 {
        return (out, tally);
    }
    while a < b {
        let lap = a / total;
        let (at, end) = (a % total, b.min((lap + 1) * total) - lap * total);
        let mut base = 0u64;
        for (item, &n) in items.iter().zip(&sizes) {
            let (lo, hi) = (at.max(base) - base, end.min(base + n).saturating_sub(base));
            if lo < hi {
                let f = &item.filter;
                let filter = if f.only.is_empty() {
                    SampleFilter::range(f.from + lo as u32, f.from + hi as u32)
                } else {
                    let only = f.only[lo as usize..hi as usize].to_vec();
                    SampleFilter { from: u32::MAX, only, to: u32::MAX }
                };
                out.push(PlanItem { shard: item.shard, filter });
            }
            base += n;
            if base >= end {
                break;
            }
        }
        a = b.min((lap + 1) * total);
    }
    (out, tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn delivered(items: &[PlanItem], counts: &[u32]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for item in items {
            for o in 0..counts[item.shard as usize] {
                if item.filter.selects(o) {
                    out.push((item.shard, o));
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn every_rank_gets_the_same_count_and_every_sample_its_due(
            counts in proptest::collection::vec(1u32..40, 1..12),
            world in 1usize..20, seed: u64, epoch in 0u64..4,
            even in prop_oneof![Just(Even::None), Just(Even::Drop), Just(Even::Pad)],
        ) {
            let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
            let mut seen: BTreeMap<(u32, u32), u32> = BTreeMap::new();
            let mut sizes = Vec::new();
            for rank in 0..world {
                let cfg = OrderConfig { seed, rank, world_size: world, ..OrderConfig::default() };
                let items = plan_samples(&counts, epoch, &cfg, even);
                let got = delivered(&items, &counts);
                let tally = even_tally(&counts, &cfg, even);
                prop_assert_eq!(got.len() as u64, tally.samples);
                sizes.push(got.len() as u64);
                for s in got {
                    *seen.entry(s).or_default() += 1;
                }
                // Contiguous: at most one partial shard at each end (per lap).
                let partial = items.iter().filter(|i| i.filter != SampleFilter::ALL).count();
                prop_assert!(partial <= 2 * (1 + (tally.padded / total.max(1)) as usize + 1));
            }
            let (lo, hi) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
            let w = world as u64;
            match even {
                Even::None => {
                    prop_assert!(hi - lo <= 1);
                    prop_assert_eq!(seen.len() as u64, total);
                    prop_assert!(seen.values().all(|&n| n == 1));
                }
                Even::Drop => {
                    prop_assert_eq!((lo, hi), (total / w, total / w));
                    prop_assert_eq!(seen.len() as u64, w * (total / w));
                    prop_assert!(seen.values().all(|&n| n == 1));
                }
                Even::Pad => {
                    prop_assert_eq!((lo, hi), (total.div_ceil(w), total.div_ceil(w)));
                    prop_assert_eq!(seen.len() as u64, total, "every sample at least once");
                    let extra: u64 = seen.values().map(|&n| u64::from(n) - 1).sum();
                    let padded: u64 = (0..world).map(|rank| {
                        let cfg = OrderConfig { seed, rank, world_size: world, ..OrderConfig::default() };
                        even_tally(&counts, &cfg, even).padded
                    }).sum();
                    prop_assert_eq!(extra, padded);
                    prop_assert_eq!(padded, w * total.div_ceil(w) - total);
                }
            }
        }
    }

    proptest! {
        /// Ranks of a run split by samples stop anywhere (holding a few
        /// samples back); the new ranks of another world size share what is
        /// left by samples: equal counts, and old ∪ new = every sample the
        /// old plans had, each once, but for the declared drops.
        #[test]
        fn resharding_a_split_run_shares_what_is_left_evenly(
            counts in proptest::collection::vec(1u32..30, 1..8),
            old in 1usize..6, new in 1usize..9, seed: u64,
            cuts in proptest::collection::vec((0u32..40, 0usize..3), 6),
            even in prop_oneof![Just(Even::None), Just(Even::Drop)],
        ) {
            use crate::order::reshard::{Progress, RankState, remaining_ranges};
            let mut done: BTreeMap<(u32, u32), u32> = BTreeMap::new();
            let mut planned = 0u64;
            let mut states = Vec::new();
            for (rank, &(cut, held)) in cuts.iter().enumerate().take(old) {
                let cfg = OrderConfig { seed, rank, world_size: old, ..OrderConfig::default() };
                let plan = plan_samples(&counts, 0, &cfg, even);
                let mut read = Vec::new();
                for (i, item) in plan.iter().enumerate() {
                    for o in 0..counts[item.shard as usize] {
                        if item.filter.selects(o) {
                            read.push((i as u32, item.shard, o));
                        }
                    }
                }
                planned += read.len() as u64;
                read.truncate((cut as usize).min(read.len()));
                let leftovers: Vec<(u32, u32)> =
                    read.iter().rev().take(held).map(|&(_, s, o)| (s, o)).collect();
                for &(_, s, o) in &read {
                    if !leftovers.contains(&(s, o)) {
                        *done.entry((s, o)).or_default() += 1;
                    }
                }
                let progress = match read.last() {
                    Some(&(i, _, o)) => Progress { item: i, next_ordinal: o + 1, leftovers, ..Progress::default() },
                    None => Progress::default(),
                };
                states.push(RankState { plan, progress });
            }
            let rest = remaining_ranges(&states, &counts);
            let mut sizes = Vec::new();
            let mut new_dropped = 0;
            let mut seen = done.clone();
            for rank in 0..new {
                let cfg = OrderConfig { rank, world_size: new, ..OrderConfig::default() };
                let (items, tally) = share_by_samples(&rest, &counts, &cfg, even);
                let got = delivered(&items, &counts);
                prop_assert_eq!(got.len() as u64, tally.samples);
                sizes.push(got.len());
                new_dropped = tally.dropped;
                for s in got {
                    *seen.entry(s).or_default() += 1;
                }
            }
            prop_assert!(seen.values().all(|&n| n == 1), "each sample once");
            prop_assert_eq!(seen.len() as u64 + new_dropped, planned);
            if even == Even::Drop {
                prop_assert!(sizes.iter().all(|&n| n == sizes[0]));
            }
        }
    }

    #[test]
    fn the_diagram_holds() {
        // Unshuffled so the order is the list's: [5, 3, 6, 4].
        let counts = [5, 3, 6, 4];
        let cfg = |rank| OrderConfig {
            rank,
            world_size: 4,
            shuffle_shards: false,
            ..OrderConfig::default()
        };
        let drop3 = plan_samples(&counts, 0, &cfg(3), Even::Drop);
        // Positions 12..16: shard 2's 12-8=4..6, shard 3's 0..2.
        assert_eq!(
            drop3,
            vec![
                PlanItem { shard: 2, filter: SampleFilter::range(4, 6) },
                PlanItem { shard: 3, filter: SampleFilter::range(0, 2) },
            ]
        );
        let pad3 = plan_samples(&counts, 0, &cfg(3), Even::Pad);
        // Positions 15..20: shard 3's 1..4, then 0, 1 of shard 0 again.
        assert_eq!(
            pad3,
            vec![
                PlanItem { shard: 3, filter: SampleFilter::range(1, 4) },
                PlanItem { shard: 0, filter: SampleFilter::range(0, 2) },
            ]
        );
        assert_eq!(
            even_tally(&counts, &cfg(3), Even::Pad),
            EvenTally { samples: 5, dropped: 0, padded: 2 }
        );
        assert_eq!(
            even_tally(&counts, &cfg(0), Even::Drop),
            EvenTally { samples: 4, dropped: 2, padded: 0 }
        );
        let whole = plan_samples(&counts, 0, &cfg(0), Even::Pad);
        assert_eq!(whole, vec![PlanItem { shard: 0, filter: SampleFilter::ALL }]);
    }

    #[test]
    fn the_policy_reads_as_written() {
        assert_eq!("pad".parse::<Even>(), Ok(Even::Pad));
        assert_eq!("".parse::<Even>(), Ok(Even::None));
        assert!("evenly".parse::<Even>().unwrap_err().contains("--even"));
    }
}
