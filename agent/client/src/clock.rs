//! The wall clock, read in one place: `shade-shared` takes time as an
//! argument, and the agent and the broker pass it this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by the wall clock; 0 for a clock set
/// before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_counts_milliseconds_not_seconds_or_microseconds() {
        let now = now_ms();
        // Between 2020 and 2100, in milliseconds.
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }
}
