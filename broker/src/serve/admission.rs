//! Admission of requests before they queue for the store thread: a rate
//! per thing and a number of requests in flight per client.
//!
//! - Rate: each thing has a token bucket of `rate` tokens refilled at `rate`
//!   per second (AWS: 20 shadow requests per second per thing). An AWS or
//!   ops request beyond it is answered 429 and never queued. `sync/up` is
//!   not rate-limited: an agent sends one message per change batch and
//!   per catch-up chunk, paced by the broker's acknowledgements, and its
//!   messages are bounded by the in-flight limit below.
//! - In flight: a client may have at most `max_inflight` requests queued
//!   for or inside the store thread; beyond it an AWS request is answered
//!   429 and a `sync/up` is dropped (the agent resends what stays
//!   unacknowledged). One client flooding requests thus fills its own
//!   budget, not the store's queue that every client shares.
//!
//! Both tables are bounded: idle buckets are pruned, and in-flight entries
//! leave when their count returns to zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Token buckets per thing.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    buckets: HashMap<String, Bucket>,
    last_prune: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const PRUNE_AFTER_SECS: f64 = 10.0;

impl RateLimiter {
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            buckets: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    /// Takes one token from `thing`'s bucket at `now`; `false` when empty.
    pub(crate) fn allow(&mut self, thing: &str, now: Instant) -> bool {
        if now.duration_since(self.last_prune).as_secs_f64() > PRUNE_AFTER_SECS {
            self.buckets
                .retain(|_, b| now.duration_since(b.at).as_secs_f64() < PRUNE_AFTER_SECS);
            self.last_prune = now;
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(thing.to_owned()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Requests in flight per client id.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One request's place in its client's budget, given back when dropped
/// (the store thread drops it once the request is handled).
#[derive(Debug)]
pub(crate) struct Slot {
    client: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> InFlight {
        InFlight {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for one more request of `client`, if it has room.
    pub(crate) fn acquire(&self, client: &str) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(client.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            client: client.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_thing_gets_its_rate_per_second_and_no_more() {
        let mut limiter = RateLimiter::new(20);
        let start = Instant::now();
        let allowed = (0..100).filter(|_| limiter.allow("t1", start)).count();
        assert_eq!(allowed, 20, "a full bucket holds one second of requests");
        assert!(
            limiter.allow("t2", start),
            "other things have their own bucket"
        );
        assert!(!limiter.allow("t1", start + Duration::from_millis(10)));
        assert!(limiter.allow("t1", start + Duration::from_millis(60)));
        let later = start + Duration::from_secs(5);
        let allowed = (0..100).filter(|_| limiter.allow("t1", later)).count();
        assert_eq!(allowed, 20, "the bucket refills to its size, not beyond");
    }

    #[test]
    fn in_flight_slots_return_when_dropped() {
        let inflight = InFlight::new(2);
        let a = inflight.acquire("c1").expect("first");
        let b = inflight.acquire("c1").expect("second");
        assert!(inflight.acquire("c1").is_none());
        assert!(inflight.acquire("c2").is_some());
        drop(a);
        let c = inflight.acquire("c1").expect("room again");
        drop((b, c));
        assert!(inflight.counts.lock().expect("lock").is_empty());
    }
}
