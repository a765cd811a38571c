//! The plan of a whole run (several epochs), drawn one shard at a time.
//!
//! ```text
//!  epoch e:   [first plan, or plan_shards(e)] ─▶ entries (e, item 0), (e, item 1), …
//!  epoch e+1: plan_shards(e+1)                ─▶ …        (built when epoch e is drained)
//! ```
//!
//! Only one epoch's shard order is held at a time: a run of `u64::MAX`
//! epochs (a client asking to stream "forever") costs what one epoch costs,
//! and starts at once. Building every epoch up front cost ~64 bytes per
//! epoch and shard before the first byte was fetched (10^6 epochs of 32
//! shards: 2 GB and 1.9 s).

use std::sync::Arc;

use super::epoch_plan::{OrderConfig, plan_shards};
use super::even_plan::{Even, plan_samples};
use super::reshard::{PlanItem, SampleFilter};

/// One shard of the run's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    pub epoch: u64,
    /// Position in its epoch's plan.
    pub item: u32,
    pub shard: u32,
    pub filter: SampleFilter,
}

/// The run's entries in order: `epochs` epochs from `order.epoch`, the
/// first one `first` when given (a resumed or resharded epoch).
#[derive(Debug, Clone)]
pub struct RunPlan {
    order: OrderConfig,
    num_shards: usize,
    first: Option<Vec<PlanItem>>,
    /// Epochs begun so far (the one in `items` is `order.epoch + begun - 1`)
    /// and how many the run has.
    begun: u64,
    epochs: u64,
    items: std::vec::IntoIter<PlanItem>,
    epoch: u64,
    item: u32,
    /// Split by samples (`order::even_plan`): every shard's sample count.
    split: Option<(Arc<[u32]>, Even)>,
    /// Where the first epoch starts: plan item and sample ordinal.
    start: Option<(u32, u32)>,
}

impl RunPlan {
    /// `first` must name shards below `num_shards` (checked by the caller:
    /// it comes from a client's resume state).
    pub fn new(
        order: &OrderConfig,
        num_shards: usize,
        epochs: u64,
        first: Option<Vec<PlanItem>>,
    ) -> RunPlan {
        RunPlan {
            order: order.clone(),
            num_shards,
            first,
            begun: 0,
            epochs,
            items: Vec::new().into_iter(),
            epoch: order.epoch,
            item: 0,
            split: None,
            start: None,
        }
    }

    /// The first epoch from plan item `item`'s sample `ordinal` on (a
    /// resume): earlier items are left out, their numbers kept.
    pub fn starting_at(mut self, item: u32, ordinal: u32) -> RunPlan {
        self.start = Some((item, ordinal));
        self
    }

    /// Epochs split by samples, `counts[s]` in shard `s`, instead of by
    /// whole shards.
    pub fn by_samples(mut self, counts: Arc<[u32]>, even: Even) -> RunPlan {
        self.split = Some((counts, even));
        self
    }
}

impl Iterator for RunPlan {
    type Item = RunEntry;

    fn next(&mut self) -> Option<RunEntry> {
        loop {
            if let Some(PlanItem { shard, filter }) = self.items.next() {
                let entry = RunEntry { epoch: self.epoch, item: self.item, shard, filter };
                self.item += 1;
                return Some(entry);
            }
            // The next epoch, if the run has one (and its number fits).
            if self.begun >= self.epochs {
                return None;
            }
            let epoch = self.order.epoch.checked_add(self.begun)?;
            let given = if self.begun == 0 { self.first.take() } else { None };
            self.begun += 1;
            let items = match given {
                Some(items) => items,
                None if self.split.is_some() => {
                    let (counts, even) = self.split.as_ref()?;
                    let items = plan_samples(counts, epoch, &self.order, *even);
                    // The same count every epoch: none now is none forever.
                    if items.is_empty() {
                        return None;
                    }
                    items
                }
                None => {
                    let shards = plan_shards(self.num_shards, epoch, &self.order);
                    // Every computed epoch gives a rank the same number of
                    // shards: none now (more ranks than shards) is none
                    // forever, and an endless run must not spin on it.
                    if shards.is_empty() {
                        return None;
                    }
                    shards
                        .into_iter()
                        .map(|s| PlanItem { shard: s as u32, filter: SampleFilter::ALL })
                        .collect()
                }
            };
            let mut items = items.into_iter();
            let mut first_item = 0;
            if let Some((item, ordinal)) = self.start.take() {
                items.by_ref().take(item as usize).for_each(drop);
                first_item = item;
                let mut rest: Vec<PlanItem> = items.collect();
                if let Some(first) = rest.first_mut() {
                    let f = &mut first.filter;
                    f.from = f.from.max(ordinal);
                    f.only.retain(|&o| o >= ordinal);
                }
                items = rest.into_iter();
            }
            (self.epoch, self.item, self.items) = (epoch, first_item, items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_run_epoch_by_epoch_in_each_epochs_order() {
        let order = OrderConfig { seed: 3, epoch: 5, ..OrderConfig::default() };
        let got: Vec<RunEntry> = RunPlan::new(&order, 4, 2, None).collect();
        assert_eq!(got.len(), 8);
        for (e, epoch) in [5u64, 6].into_iter().enumerate() {
            let shards: Vec<u32> = got[e * 4..e * 4 + 4].iter().map(|x| x.shard).collect();
            let want: Vec<u32> =
                plan_shards(4, epoch, &order).into_iter().map(|s| s as u32).collect();
            assert_eq!(shards, want);
            assert!(got[e * 4..e * 4 + 4].iter().all(|x| x.epoch == epoch));
            let items: Vec<u32> = got[e * 4..e * 4 + 4].iter().map(|x| x.item).collect();
            assert_eq!(items, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn the_first_epoch_may_be_given() {
        let order = OrderConfig::default();
        let first = vec![PlanItem {
            shard: 2,
            filter: SampleFilter { from: 7, only: vec![1], to: u32::MAX },
        }];
        let got: Vec<RunEntry> = RunPlan::new(&order, 3, 2, Some(first.clone())).collect();
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].epoch, got[0].shard, &got[0].filter), (0, 2, &first[0].filter));
        assert!(got[1..].iter().all(|x| x.epoch == 1 && x.filter == SampleFilter::ALL));
    }

    #[test]
    fn a_resumed_plan_starts_at_its_item_and_sample() {
        let order = OrderConfig { seed: 3, ..OrderConfig::default() };
        let full: Vec<RunEntry> = RunPlan::new(&order, 6, 2, None).collect();
        let resumed: Vec<RunEntry> = RunPlan::new(&order, 6, 2, None).starting_at(2, 5).collect();
        assert_eq!(resumed.len(), full.len() - 2);
        assert_eq!((resumed[0].item, resumed[0].shard), (2, full[2].shard));
        assert_eq!(resumed[0].filter.from, 5);
        assert_eq!(resumed[1..], full[3..]);
    }

    #[test]
    fn endless_runs_cost_one_epoch() {
        let order = OrderConfig { epoch: 10, ..OrderConfig::default() };
        let mut plan = RunPlan::new(&order, 32, u64::MAX, None);
        // Draws lazily: an entry 100,000 epochs on without holding the others.
        let e = plan.nth(32 * 100_000).expect("an entry");
        assert_eq!(e.epoch, 10 + 100_000);
        assert!(plan.items.len() < 32);
        // The epoch range saturates instead of wrapping.
        assert!(
            RunPlan::new(&OrderConfig { epoch: u64::MAX, ..order }, 2, 5, None).next().is_some()
        );
    }

    #[test]
    fn no_shards_no_entries() {
        assert_eq!(RunPlan::new(&OrderConfig::default(), 0, u64::MAX, None).count(), 0);
        let ranks = OrderConfig { rank: 5, world_size: 8, ..OrderConfig::default() };
        // Rank 5 of 8 over 2 shards gets nothing in any epoch; a finite
        // run ends.
        assert_eq!(RunPlan::new(&ranks, 2, 1000, None).count(), 0);
    }
}
