//! The seeded sample shuffle buffer, as webdataset's `shuffle(n)`.
//!
//! The buffer fills to `capacity` items (or `max_bytes`); from then on each
//! new item replaces a uniformly chosen one, which is emitted. The choice
//! depends only on the seed and the sequence of items, never on timing.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A bounded random-replacement buffer.
#[derive(Debug)]
pub struct ShuffleBuffer<T> {
    items: Vec<(T, u64)>,
    capacity: usize,
    max_bytes: u64,
    bytes: u64,
    rng: ChaCha8Rng,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(capacity: usize, max_bytes: u64, rng: ChaCha8Rng) -> ShuffleBuffer<T> {
        ShuffleBuffer {
            items: Vec::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            rng,
        }
    }

    /// Adds `item` of `nbytes`; returns items to emit now (in order).
    pub fn push(&mut self, item: T, nbytes: u64, out: &mut Vec<T>) {
        self.items.push((item, nbytes));
        self.bytes += nbytes;
        while self.items.len() > self.capacity
            || (self.bytes > self.max_bytes && self.items.len() > 1)
        {
            let j = self.rng.random_range(0..self.items.len());
            let (item, n) = self.items.swap_remove(j);
            self.bytes -= n;
            out.push(item);
        }
    }

    /// Emits everything left, in random order.
    pub fn drain(&mut self, out: &mut Vec<T>) {
        while !self.items.is_empty() {
            let j = self.rng.random_range(0..self.items.len());
            out.push(self.items.swap_remove(j).0);
        }
        self.bytes = 0;
    }

    /// Where the buffer's random stream stands (for a resume token).
    pub fn word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Puts back what a buffer held (`items` in slot order, with their
    /// bytes) and where its random stream stood: it then draws as the
    /// saved one would have.
    pub fn restore(&mut self, items: Vec<(T, u64)>, word_pos: u128) {
        self.bytes = items.iter().map(|(_, n)| n).sum();
        self.items = items;
        self.rng.set_word_pos(word_pos);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The items held, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(item, _)| item)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::seed::stream_rng;

    fn run(seed: u64) -> Vec<u32> {
        let mut b = ShuffleBuffer::new(10, u64::MAX, stream_rng("t", &[seed]));
        let mut out = Vec::new();
        for i in 0..100 {
            b.push(i, 1, &mut out);
        }
        b.drain(&mut out);
        out
    }

    #[test]
    fn permutes_deterministically() {
        let a = run(1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, sorted);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
    }

    #[test]
    fn a_restored_buffer_continues_as_the_saved_one() {
        let mut a = ShuffleBuffer::new(10, u64::MAX, stream_rng("t", &[3]));
        let mut out = Vec::new();
        for i in 0..37 {
            a.push(i, 1, &mut out);
        }
        let held: Vec<(u32, u64)> = a.iter().map(|&i| (i, 1)).collect();
        let mut b = ShuffleBuffer::new(10, u64::MAX, stream_rng("t", &[3]));
        b.restore(held, a.word_pos());
        let (mut rest_a, mut rest_b) = (Vec::new(), Vec::new());
        for i in 37..100 {
            a.push(i, 1, &mut rest_a);
            b.push(i, 1, &mut rest_b);
        }
        a.drain(&mut rest_a);
        b.drain(&mut rest_b);
        assert_eq!(rest_a, rest_b);
    }

    #[test]
    fn byte_cap_bounds_the_buffer() {
        let mut b = ShuffleBuffer::new(1000, 50, stream_rng("t", &[0]));
        let mut out = Vec::new();
        for i in 0..100 {
            b.push(i, 10, &mut out);
            assert!(b.len() <= 5);
        }
    }
}
