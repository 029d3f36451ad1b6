//! [`Backlog`]: what waits to be pushed, oldest first, bounded; the oldest is dropped (and
//! its weight reported for counting) when more arrives than the bound allows.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Something waiting to be pushed: its weight (samples, lines) and bytes.
pub(crate) trait Weighed {
    /// What the bound and the metrics count (samples or lines).
    fn weight(&self) -> usize;
    /// Memory held.
    fn bytes(&self) -> usize;
}

/// A bounded queue that drops its oldest items to make room.
#[derive(Debug)]
pub(crate) struct Backlog<T> {
    items: VecDeque<T>,
    weight: usize,
    bytes: usize,
    max_weight: usize,
    max_bytes: usize,
}

impl<T: Weighed> Backlog<T> {
    /// At most `max_weight` (and `max_bytes`) wait; the newest item is always kept, however
    /// heavy.
    pub(crate) fn new(max_weight: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            weight: 0,
            bytes: 0,
            max_weight,
            max_bytes,
        }
    }

    /// Appends `item`; returns the weight of the oldest items dropped to make room.
    pub(crate) fn push(&mut self, item: T) -> usize {
        self.weight += item.weight();
        self.bytes += item.bytes();
        self.items.push_back(item);
        self.trim()
    }

    /// Takes up to `max_items` of the oldest items.
    pub(crate) fn take(&mut self, max_items: usize) -> Vec<T> {
        let n = max_items.min(self.items.len());
        let taken: Vec<T> = self.items.drain(..n).collect();
        for item in &taken {
            self.weight -= item.weight();
            self.bytes -= item.bytes();
        }
        taken
    }

    /// Puts a batch that could not be pushed back in front, as the oldest; returns the
    /// weight dropped if the bound no longer holds everything.
    pub(crate) fn restore(&mut self, batch: Vec<T>) -> usize {
        for item in batch.into_iter().rev() {
            self.weight += item.weight();
            self.bytes += item.bytes();
            self.items.push_front(item);
        }
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while (self.weight > self.max_weight || self.bytes > self.max_bytes) && self.items.len() > 1
        {
            let Some(oldest) = self.items.pop_front() else {
                break;
            };
            self.weight -= oldest.weight();
            self.bytes -= oldest.bytes();
            dropped += oldest.weight();
        }
        dropped
    }

    /// The oldest item.
    pub(crate) fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Total weight waiting.
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }
}

/// A batch taken from a [`Backlog`] to be pushed. Unless it is marked [`Batch::done`], it
/// goes back in front of the backlog when dropped, also when the push is cancelled midway
/// (the runtime stopping at shutdown): the final flush then sends it again. A receiver may
/// so see a batch twice; Loki and Prometheus both ignore an exact repeat.
pub(crate) struct Batch<'b, T: Weighed> {
    from: &'b Mutex<Backlog<T>>,
    items: Vec<T>,
}

impl<'b, T: Weighed> Batch<'b, T> {
    /// Up to `max_items` of the oldest items of `from`.
    pub(crate) fn take(from: &'b Mutex<Backlog<T>>, max_items: usize) -> Self {
        let items = from.lock().take(max_items);
        Self { from, items }
    }

    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }

    /// Samples or lines in the batch.
    pub(crate) fn weight(&self) -> usize {
        self.items.iter().map(Weighed::weight).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Pushed, or refused for good: it does not go back.
    pub(crate) fn done(mut self) {
        self.items.clear();
    }

    /// Goes back in front of the backlog now; returns the weight dropped to make room.
    pub(crate) fn put_back(mut self) -> usize {
        let items = std::mem::take(&mut self.items);
        self.from.lock().restore(items)
    }
}

impl<T: Weighed> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            let items = std::mem::take(&mut self.items);
            self.from.lock().restore(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weighed for (usize, usize) {
        fn weight(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn drops_the_oldest_beyond_the_bound_and_reports_their_weight() {
        let mut backlog = Backlog::new(10, 1000);
        assert_eq!(backlog.push((4, 1)), 0);
        assert_eq!(backlog.push((4, 1)), 0);
        assert_eq!(backlog.push((4, 1)), 4);
        assert_eq!((backlog.len(), backlog.weight()), (2, 8));
        // Too heavy alone: kept, everything older goes.
        assert_eq!(backlog.push((30, 1)), 8);
        assert_eq!((backlog.len(), backlog.weight()), (1, 30));
    }

    #[test]
    fn bytes_are_bounded_too() {
        let mut backlog = Backlog::new(100, 10);
        backlog.push((1, 6));
        assert_eq!(backlog.push((1, 6)), 1);
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn a_restored_batch_is_oldest_and_trimmed_first() {
        let mut backlog = Backlog::new(3, 1000);
        backlog.push((1, 0));
        backlog.push((1, 0));
        let batch = backlog.take(2);
        assert_eq!(backlog.len(), 0);
        backlog.push((1, 2));
        backlog.push((1, 3));
        assert_eq!(backlog.restore(batch), 1);
        let left: Vec<_> = backlog.take(10).iter().map(|i| i.1).collect();
        assert_eq!(left, [0, 2, 3]);
    }

    #[test]
    fn a_batch_dropped_unfinished_goes_back_first() {
        let backlog = Mutex::new(Backlog::new(10, 1000));
        for bytes in 0..3 {
            backlog.lock().push((1, bytes));
        }
        let batch = Batch::take(&backlog, 2);
        assert_eq!((batch.weight(), backlog.lock().len()), (2, 1));
        drop(batch); // e.g. a push cancelled at shutdown
        let order: Vec<_> = backlog.lock().take(10).iter().map(|i| i.1).collect();
        assert_eq!(order, [0, 1, 2]);
        backlog.lock().push((1, 7));
        Batch::take(&backlog, 1).done();
        assert_eq!(backlog.lock().len(), 0);
    }
}
