//! Where a stream stands, and the work left in an epoch when ranks resume
//! with a different world size.
//!
//! ```text
//!  old rank r: plan [s7 s2 s9 s0]   read up to (item 2, sample 14)   leftover {s2#31, s9#3} (in the shuffle buffer)
//!  remaining:  s9: #14.. ∪ {#3}   s0: all   s2: {#31}
//!  new ranks:  remaining items sorted by shard, item i to rank i mod W'
//! ```
//!
//! A sample is named by its shard (index in the dataset's list) and its
//! ordinal in that shard. What a rank has delivered after a batch is: every
//! selected sample of the items before its read position and of the
//! current item below the read ordinal, except the leftovers (read but still
//! in the shuffle buffer or the batch being built). The complement, over
//! all old ranks, is what the new ranks share; each sample goes to exactly
//! one of them.

use std::collections::BTreeMap;

/// Which samples of a shard a plan item delivers: ordinals from `from` up
/// to `to` (exclusive; `u32::MAX`: to the end), plus the ordinals in `only`
/// (sorted; all below `from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFilter {
    pub from: u32,
    pub only: Vec<u32>,
    pub to: u32,
}

impl SampleFilter {
    pub const ALL: SampleFilter = SampleFilter { from: 0, only: Vec::new(), to: u32::MAX };

    /// Ordinals `from..to`.
    pub fn range(from: u32, to: u32) -> SampleFilter {
        SampleFilter { from, only: Vec::new(), to }
    }

    pub fn selects(&self, ordinal: u32) -> bool {
        (ordinal >= self.from && ordinal < self.to) || self.only.binary_search(&ordinal).is_ok()
    }

    /// Whether no ordinal at or past `ordinal` is selected: the rest of the
    /// shard need not be read.
    pub fn done_at(&self, ordinal: u32) -> bool {
        ordinal >= self.to && self.only.last().is_none_or(|&o| o < ordinal)
    }
}

/// One shard of a rank's plan and the samples of it the rank delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    pub shard: u32,
    pub filter: SampleFilter,
}

/// How far a rank's stream got after a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Plan item of the last sample read, and that sample's ordinal + 1
    /// (`(0, 0)`: nothing read yet).
    pub item: u32,
    pub next_ordinal: u32,
    /// Samples read but not yet delivered: (shard, ordinal); first the
    /// `rest` out of the shuffle buffer waiting for a batch, then the
    /// buffer's, in its slot order.
    pub leftovers: Vec<(u32, u32)>,
    pub rest: u32,
    /// Where the shuffle buffer's random stream stands (none: no buffer).
    pub rng_word_pos: Option<u128>,
}

/// The work a rank still had: its plan and its progress.
#[derive(Debug, Clone)]
pub struct RankState {
    pub plan: Vec<PlanItem>,
    pub progress: Progress,
}

/// The samples left over all old ranks, one item per shard, by shard index.
pub fn remaining(ranks: &[RankState]) -> Vec<PlanItem> {
    let mut by_shard: BTreeMap<u32, SampleFilter> = BTreeMap::new();
    let mut add = |shard: u32, f: SampleFilter| {
        let e = by_shard.entry(shard).or_insert(SampleFilter {
            from: u32::MAX,
            only: Vec::new(),
            to: u32::MAX,
        });
        e.from = e.from.min(f.from);
        e.only.extend(f.only);
    };
    for rank in ranks {
        let p = &rank.progress;
        for (i, item) in rank.plan.iter().enumerate() {
            let i = i as u32;
            let nothing_read = p.item == 0 && p.next_ordinal == 0;
            if i > p.item || nothing_read {
                add(item.shard, item.filter.clone());
            } else if i == p.item {
                // Selected samples at or past the read ordinal.
                let from = item.filter.from.max(p.next_ordinal);
                let only = item.filter.only.iter().copied().filter(|&o| o >= p.next_ordinal);
                add(item.shard, SampleFilter { from, only: only.collect(), to: u32::MAX });
            }
        }
        for &(shard, ordinal) in &p.leftovers {
            add(shard, SampleFilter { from: u32::MAX, only: vec![ordinal], to: u32::MAX });
        }
    }
    by_shard
        .into_iter()
        .filter_map(|(shard, mut f)| {
            f.only.retain(|&o| o < f.from);
            f.only.sort_unstable();
            f.only.dedup();
            (f.from != u32::MAX || !f.only.is_empty()).then_some(PlanItem { shard, filter: f })
        })
        .collect()
}

/// What the ranks of a run split by samples left, item by item: the rest of
/// each plan item from the read position as a range (the ranks' ranges are
/// disjoint, so they are not merged), and the leftovers as one list per
/// shard; ordered by shard and first sample, the same on every new rank.
pub fn remaining_ranges(ranks: &[RankState], counts: &[u32]) -> Vec<PlanItem> {
    let mut items = Vec::new();
    let mut listed: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for rank in ranks {
        let p = &rank.progress;
        let nothing_read = p.item == 0 && p.next_ordinal == 0;
        for (i, item) in rank.plan.iter().enumerate() {
            let i = i as u32;
            if !nothing_read && i < p.item {
                continue;
            }
            let mut f = item.filter.clone();
            if !nothing_read && i == p.item {
                f.from = f.from.max(p.next_ordinal);
                f.only.retain(|&o| o >= p.next_ordinal);
            }
            let end = f.to.min(counts.get(item.shard as usize).copied().unwrap_or(0));
            if f.from < end {
                items
                    .push(PlanItem { shard: item.shard, filter: SampleFilter::range(f.from, end) });
            }
            listed.entry(item.shard).or_default().extend(f.only);
        }
        for &(shard, ordinal) in &p.leftovers {
            listed.entry(shard).or_default().push(ordinal);
        }
    }
    for (shard, mut only) in listed {
        only.sort_unstable();
        if !only.is_empty() {
            items.push(PlanItem {
                shard,
                filter: SampleFilter { from: u32::MAX, only, to: u32::MAX },
            });
        }
    }
    let first =
        |i: &PlanItem| i.filter.from.min(i.filter.only.first().copied().unwrap_or(u32::MAX));
    items.sort_by_key(|i| (i.shard, first(i)));
    items
}

/// New rank `rank` of `world_size`'s share of `items`: every
/// `world_size`-th, as the shard stride.
pub fn share(items: &[PlanItem], rank: usize, world_size: usize) -> Vec<PlanItem> {
    items.iter().skip(rank).step_by(world_size.max(1)).cloned().collect()
}

/// `PlanItem`s as text: `shard:from:o,o;…` (`from` empty when none), with
/// `:to` after it when the item ends before its shard does.
pub fn encode_items(items: &[PlanItem]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        let from =
            if item.filter.from == u32::MAX { String::new() } else { item.filter.from.to_string() };
        let only: Vec<String> = item.filter.only.iter().map(u32::to_string).collect();
        out.push_str(&format!("{}:{}:{}", item.shard, from, only.join(",")));
        if item.filter.to != u32::MAX {
            out.push_str(&format!(":{}", item.filter.to));
        }
    }
    out
}

pub fn decode_items(text: &str) -> Option<Vec<PlanItem>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(';')
        .map(|part| {
            let mut fields = part.split(':');
            let shard = fields.next()?.parse().ok()?;
            let from = match fields.next()? {
                "" => u32::MAX,
                n => n.parse().ok()?,
            };
            let only = match fields.next()? {
                "" => Vec::new(),
                list => list.split(',').map(|o| o.parse().ok()).collect::<Option<Vec<u32>>>()?,
            };
            let to = match fields.next() {
                None => u32::MAX,
                Some(n) => n.parse().ok()?,
            };
            if fields.next().is_some() {
                return None;
            }
            Some(PlanItem { shard, filter: SampleFilter { from, only, to } })
        })
        .collect()
}

/// Leftovers as text: `shard:o,o;…`, grouped by shard.
pub fn encode_leftovers(leftovers: &[(u32, u32)]) -> String {
    let mut by_shard: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(shard, ordinal) in leftovers {
        by_shard.entry(shard).or_default().push(ordinal);
    }
    let groups: Vec<String> = by_shard
        .into_iter()
        .map(|(shard, mut ords)| {
            ords.sort_unstable();
            let ords: Vec<String> = ords.iter().map(u32::to_string).collect();
            format!("{shard}:{}", ords.join(","))
        })
        .collect();
    groups.join(";")
}

pub fn decode_leftovers(text: &str) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for group in text.split(';').filter(|g| !g.is_empty()) {
        let (shard, ords) = group.split_once(':')?;
        let shard: u32 = shard.parse().ok()?;
        for o in ords.split(',').filter(|o| !o.is_empty()) {
            out.push((shard, o.parse().ok()?));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn all(shard: u32) -> PlanItem {
        PlanItem { shard, filter: SampleFilter::ALL }
    }

    proptest! {
        /// Split `shards` × `per_shard` samples over `old` ranks, let each
        /// consume a prefix with some leftovers, reshard to `new` ranks:
        /// delivered ∪ new shares = everything, each sample once.
        #[test]
        fn resharding_delivers_every_remaining_sample_once(
            shards in 1u32..20, per_shard in 1u32..12, old in 1usize..5, new in 1usize..6,
            cut in proptest::collection::vec((0u32..25, 0u32..12, 0usize..4), 5),
        ) {
            let mut delivered = BTreeSet::new();
            let mut states = Vec::new();
            for (r, &(item, ord, n_left)) in cut.iter().enumerate().take(old) {
                let plan: Vec<PlanItem> = (0..shards).skip(r).step_by(old).map(all).collect();
                let item = if plan.is_empty() { 0 } else { item % plan.len() as u32 };
                let next = ord.min(per_shard);
                let mut read = Vec::new();
                for (i, it) in plan.iter().enumerate() {
                    let upto = if (i as u32) < item { per_shard } else if i as u32 == item { next } else { 0 };
                    read.extend((0..upto).map(|o| (it.shard, o)));
                }
                let leftovers: Vec<(u32, u32)> = read.iter().rev().take(n_left).copied().collect();
                for s in &read {
                    if !leftovers.contains(s) {
                        delivered.insert(*s);
                    }
                }
                let progress = if read.is_empty() { Progress::default() } else {
                    Progress { item, next_ordinal: next, leftovers, ..Progress::default() }
                };
                states.push(RankState { plan, progress });
            }
            let rest = remaining(&states);
            let round = decode_items(&encode_items(&rest)).unwrap();
            prop_assert_eq!(&round, &rest);
            let mut seen = delivered.clone();
            for r in 0..new {
                for item in share(&rest, r, new) {
                    for o in 0..per_shard {
                        if item.filter.selects(o) {
                            prop_assert!(seen.insert((item.shard, o)), "twice: {:?}", (item.shard, o));
                        }
                    }
                }
            }
            prop_assert_eq!(seen.len() as u32, shards * per_shard);
        }
    }

    #[test]
    fn leftovers_round_trip_grouped_by_shard() {
        let l = vec![(3, 9), (1, 2), (3, 1)];
        assert_eq!(encode_leftovers(&l), "1:2;3:1,9");
        let mut back = decode_leftovers(&encode_leftovers(&l)).unwrap();
        back.sort();
        assert_eq!(back, vec![(1, 2), (3, 1), (3, 9)]);
        assert_eq!(decode_leftovers(""), Some(vec![]));
        assert_eq!(decode_items("x"), None);
    }
}
