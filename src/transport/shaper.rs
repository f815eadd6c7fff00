//! Read shaping per connection: a token bucket in bytes per second, as
//! ejabberd's shapers. The connection asks it before each read and sleeps
//! until it allows one, so a fast sender is slowed by TCP flow control
//! instead of being failed. No clock of its own: callers pass `now`.

use tokio::time::{Duration, Instant};

#[derive(Debug)]
pub struct Shaper {
    /// Bytes per second.
    rate: f64,
    /// Most tokens held: one second's worth.
    burst: f64,
    /// May go negative: a read takes what arrived, and the debt is paid
    /// by waiting before the next one.
    tokens: f64,
    last: Instant,
}

impl Shaper {
    /// `None` for a rate of 0 (unshaped). Starts with a full bucket.
    pub fn new(rate: u64, now: Instant) -> Option<Shaper> {
        (rate > 0).then(|| {
            let rate = rate as f64;
            Shaper {
                rate,
                burst: rate,
                tokens: rate,
                last: now,
            }
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// `n` bytes were read at `now`.
    pub fn consumed(&mut self, n: usize, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// When the next read may start: `None` if at once.
    pub fn ready_at(&self) -> Option<Instant> {
        (self.tokens < 0.0).then(|| self.last + Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_zero_is_unshaped() {
        assert!(Shaper::new(0, Instant::now()).is_none());
    }

    #[test]
    fn a_burst_of_one_second_passes_then_reads_wait_for_the_debt_to_be_paid() {
        let t0 = Instant::now();
        let mut s = Shaper::new(1000, t0).expect("shaped");
        s.consumed(1000, t0);
        assert_eq!(
            s.ready_at(),
            None,
            "the full bucket covers one second's worth"
        );
        s.consumed(500, t0);
        assert_eq!(s.ready_at(), Some(t0 + Duration::from_millis(500)));
        // Half a second later the debt is paid.
        s.consumed(0, t0 + Duration::from_millis(500));
        assert_eq!(s.ready_at(), None);
    }

    #[test]
    fn idle_time_refills_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut s = Shaper::new(1000, t0).expect("shaped");
        s.consumed(0, t0 + Duration::from_secs(3600));
        s.consumed(1500, t0 + Duration::from_secs(3600));
        assert_eq!(
            s.ready_at(),
            Some(t0 + Duration::from_secs(3600) + Duration::from_millis(500))
        );
    }

    #[test]
    fn over_a_long_flood_the_average_is_the_rate() {
        let t0 = Instant::now();
        let mut s = Shaper::new(10_000, t0).expect("shaped");
        let mut now = t0;
        let mut read = 0u64;
        // Reads of 4 KiB whenever allowed, for ten seconds.
        while now < t0 + Duration::from_secs(10) {
            if let Some(at) = s.ready_at() {
                now = at;
            }
            s.consumed(4096, now);
            read += 4096;
        }
        // One second of burst plus ten seconds at the rate, within the
        // read that ran into the debt and the one made at the deadline.
        assert!(read <= 110_000 + 2 * 4096, "{read}");
        assert!(read >= 100_000, "{read}");
    }
}
