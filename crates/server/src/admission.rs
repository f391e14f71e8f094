//! Bounded admission: at most `max_concurrent + max_queue` generation requests in flight;
//! beyond that a request is refused at once (429 with Retry-After) instead of queueing forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts requests in flight against a fixed limit.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
}

/// A slot in flight, given back on drop (also when a client disconnects mid-stream).
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Admission {
    /// Admission for `limit` requests in flight.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            limit: limit.max(1),
        })
    }

    /// Takes a slot, or None when all are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_recovers_on_drop() {
        let a = Admission::new(2);
        let p1 = a.try_acquire().unwrap();
        let _p2 = a.try_acquire().unwrap();
        assert!(a.try_acquire().is_none());
        drop(p1);
        assert_eq!(a.in_flight(), 1);
        assert!(a.try_acquire().is_some());
    }
}
