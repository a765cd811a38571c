//! Per-user caps on sessions and ring memory.
//!
//! The daemon's ring memory is one pool for the node. Without a cap per
//! user (the peer's UID, from `SO_PEERCRED`), one user's runaway loop of
//! `OpenStream`s takes all of it and every other user's session is refused.
//! A session takes its share before any work is done for it (listing,
//! ring) and gives it back when it ends, however it ends (a guard).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one user may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    pub sessions: usize,
    pub ring_bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Held {
    sessions: usize,
    ring_bytes: u64,
}

/// Every user's holdings.
#[derive(Debug)]
pub struct UserQuotas {
    limits: UserLimits,
    held: Arc<Mutex<HashMap<u32, Held>>>,
}

/// One session's share; given back when dropped.
#[derive(Debug)]
pub struct QuotaGuard {
    uid: u32,
    ring_bytes: u64,
    held: Arc<Mutex<HashMap<u32, Held>>>,
}

impl UserQuotas {
    pub fn new(limits: UserLimits) -> UserQuotas {
        UserQuotas { limits, held: Default::default() }
    }

    /// Takes one session and `ring_bytes` for `uid`, or says why not.
    pub fn take(&self, uid: u32, ring_bytes: u64) -> Result<QuotaGuard, String> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let h = held.entry(uid).or_default();
        if h.sessions >= self.limits.sessions {
            return Err(format!(
                "user {uid} already has {} sessions, the most one user may hold \
                 (--max-sessions-per-user)",
                h.sessions
            ));
        }
        if h.ring_bytes.saturating_add(ring_bytes) > self.limits.ring_bytes {
            return Err(format!(
                "a ring of {ring_bytes} bytes would take user {uid} past {} bytes of rings \
                 ({} in use; --ring-memory-per-user)",
                self.limits.ring_bytes, h.ring_bytes
            ));
        }
        h.sessions += 1;
        h.ring_bytes += ring_bytes;
        Ok(QuotaGuard { uid, ring_bytes, held: self.held.clone() })
    }

    /// Sessions `uid` holds now.
    pub fn sessions_of(&self, uid: u32) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&uid).map_or(0, |h| h.sessions)
    }
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = held.get_mut(&self.uid) {
            h.sessions = h.sessions.saturating_sub(1);
            h.ring_bytes = h.ring_bytes.saturating_sub(self.ring_bytes);
            if h.sessions == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_another_users_share() {
        let q = UserQuotas::new(UserLimits { sessions: 2, ring_bytes: 100 });
        let a = q.take(1000, 60).expect("first");
        assert!(q.take(1000, 60).unwrap_err().contains("ring"), "past the user's ring bytes");
        let b = q.take(1000, 40).expect("second");
        assert!(q.take(1000, 0).unwrap_err().contains("sessions"), "past the user's sessions");
        let other = q.take(1001, 100).expect("another user is not affected");
        drop((a, b));
        assert_eq!(q.sessions_of(1000), 0, "given back when the sessions end");
        assert!(q.take(1000, 100).is_ok());
        drop(other);
    }
}
