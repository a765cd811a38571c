//! The slot table's unit tests, outside `slot_table.rs` because
//! `model.rs` compiles that file a second time on shuttle's atomics, which
//! only work inside shuttle's scheduler.

use super::slot_table::{SlotCounts, SlotError, SlotTable, SlotToken};

#[test]
fn lifecycle_and_stale_tokens() {
    let t = SlotTable::new(2);
    let a = t.acquire().unwrap();
    let b = t.acquire().unwrap();
    assert!(t.acquire().is_none(), "two slots only");
    let lease_a = t.publish(a).unwrap();
    assert_eq!(t.counts(), SlotCounts { free: 0, filling: 1, leased: 1 });
    assert_eq!(
        t.publish(a),
        Err(SlotError::Stale { slot: a.slot, generation: a.generation }),
        "published twice"
    );
    t.release(lease_a).unwrap();
    assert!(t.release(lease_a).is_err(), "released twice");
    t.abandon(b).unwrap();
    assert_eq!(t.free_count(), 2);
    assert_eq!(
        t.release(SlotToken { slot: 9, generation: 0 }),
        Err(SlotError::NoSuchSlot { slot: 9 })
    );
}

#[test]
fn reclaim_returns_leases_and_old_tokens_cannot_free_new_occupants() {
    let t = SlotTable::new(3);
    let leases: Vec<_> = (0..3).map(|_| t.publish(t.acquire().unwrap()).unwrap()).collect();
    assert_eq!(t.free_count(), 0);
    assert_eq!(t.reclaim_leased(), 3, "client died");
    let again = t.publish(t.acquire().unwrap()).unwrap();
    assert_eq!(again.slot, leases[0].slot);
    assert!(t.release(leases[0]).is_err(), "a stale lease must not free the new occupant");
    t.release(again).unwrap();
}
