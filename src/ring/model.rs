//! The slot table's randomized-schedule model test (shuttle): the same
//! source file compiled a second time on shuttle's atomics, beside the real
//! one, so that `cargo test` runs it. (tokio swaps in loom's atomics with a
//! cfg, which needs a build of its own; a second copy of one small module
//! does not.)

/// What `slot_table.rs` imports as `super::sync`.
mod sync {
    pub use shuttle::sync::atomic::{AtomicU64, Ordering};
}

// Loaded twice on purpose (the point of this file); only what the model
// test calls is used here.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "slot_table.rs"]
mod slot_table;

use shuttle::sync::Arc;
use shuttle::sync::mpsc::channel;
use shuttle::thread;
use slot_table::{SlotTable, SlotToken};

/// A daemon filling and a client releasing, with a reclaim racing them.
#[test]
fn no_slot_is_ever_owned_twice() {
    shuttle::check_random(
        || {
            let table = Arc::new(SlotTable::new(2));
            let (tx, rx) = channel::<SlotToken>();
            let daemon = {
                let table = table.clone();
                thread::spawn(move || {
                    let mut published = 0;
                    for _ in 0..6 {
                        if let Some(token) = table.acquire() {
                            // Filling: nobody else may hold this slot.
                            let lease = table.publish(token).expect("we own the filling slot");
                            published += 1;
                            let _ = tx.send(lease);
                        } else {
                            thread::yield_now();
                        }
                    }
                    published
                })
            };
            let client = {
                let table = table.clone();
                thread::spawn(move || {
                    let mut released = 0;
                    while let Ok(lease) = rx.recv() {
                        // A release may lose to the reclaim below, never
                        // free someone else's slot.
                        if table.release(lease).is_ok() {
                            released += 1;
                        }
                    }
                    released
                })
            };
            let reclaimer = {
                let table = table.clone();
                thread::spawn(move || table.reclaim_leased())
            };
            let published = daemon.join().expect("daemon");
            let released = client.join().expect("client");
            let reclaimed = reclaimer.join().expect("reclaimer");
            assert_eq!(released + reclaimed, published, "each lease ends exactly once");
            assert_eq!(table.free_count(), 2, "everything comes back");
        },
        5000,
    );
}
