//! Splitting an object into the byte ranges we fetch in parallel.
//!
//! ```text
//!  0        part_bytes   2·part_bytes          size
//!  ├────────────┼────────────┼──────────────────┤
//!  │  part 0    │  part 1    │ part 2 (shorter) │
//! ```

use std::ops::Range;

/// The parts of one object, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    pub size: u64,
    pub part_bytes: u64,
}

impl PartPlan {
    /// Plans `size` bytes in parts of `part_bytes` (at least 1).
    pub fn new(size: u64, part_bytes: u64) -> PartPlan {
        PartPlan { size, part_bytes: part_bytes.max(1) }
    }

    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.part_bytes)
    }

    /// The byte ranges, covering `0..size` exactly once.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + use<> {
        let PartPlan { size, part_bytes } = *self;
        (0..self.count()).map(move |i| i * part_bytes..((i + 1) * part_bytes).min(size))
    }

    /// The same, the first `lead` bytes in parts of `lead_part` (at most
    /// `part_bytes`), the rest as [`PartPlan::ranges`] cuts it.
    pub fn ranges_led(
        &self,
        lead: u64,
        lead_part: u64,
    ) -> impl Iterator<Item = Range<u64>> + use<> {
        let PartPlan { size, part_bytes } = *self;
        let lead = lead.min(size);
        let small = lead_part.clamp(1, part_bytes);
        let head = (0..lead.div_ceil(small)).map(move |i| i * small..((i + 1) * small).min(lead));
        let rest = PartPlan::new(size - lead, part_bytes).ranges();
        head.chain(rest.map(move |r| r.start + lead..r.end + lead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn last_part_is_short() {
        let r: Vec<_> = PartPlan::new(10, 4).ranges().collect();
        assert_eq!(r, [0..4, 4..8, 8..10]);
        assert_eq!(PartPlan::new(0, 4).ranges().count(), 0);
    }

    proptest! {
        #[test]
        fn ranges_tile_the_object(size in 0u64..1_000_000, part in 1u64..100_000) {
            let plan = PartPlan::new(size, part);
            let mut next = 0;
            for r in plan.ranges() {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start && r.end - r.start <= part);
                next = r.end;
            }
            prop_assert_eq!(next, size);
        }

        #[test]
        fn led_ranges_tile_the_object(
            size in 0u64..1_000_000,
            part in 1u64..100_000,
            lead in 0u64..300_000,
            small in 1u64..100_000,
        ) {
            let plan = PartPlan::new(size, part);
            let mut next = 0;
            for r in plan.ranges_led(lead, small) {
                prop_assert_eq!(r.start, next);
                let most = if r.start < lead { small.min(part) } else { part };
                prop_assert!(r.end > r.start && r.end - r.start <= most);
                next = r.end;
            }
            prop_assert_eq!(next, size);
        }
    }

    #[test]
    fn a_lead_is_cut_small_then_parts_resume() {
        let r: Vec<_> = PartPlan::new(20, 8).ranges_led(10, 4).collect();
        assert_eq!(r, [0..4, 4..8, 8..10, 10..18, 18..20]);
        let plain: Vec<_> = PartPlan::new(20, 8).ranges().collect();
        assert_eq!(PartPlan::new(20, 8).ranges_led(0, 4).collect::<Vec<_>>(), plain);
    }
}
