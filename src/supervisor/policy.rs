//! When to restart a dead worker, and when to give up.
//!
//! A worker that dies is started again at once (a reader's stall is the time the new one takes
//! to start). Deaths close together back off: the n-th within [`WINDOW`] waits
//! 100 ms x 2^(n-2), so a worker failing at start (S3 unreachable, a broken upgraded binary)
//! does not spin. More than [`MAX_RESTARTS`] deaths within [`WINDOW`] is a crash loop: the
//! supervisor gives up and unmounts. Upgrades are asked for and are not counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restarts allowed within [`WINDOW`] before giving up.
pub const MAX_RESTARTS: usize = 5;
/// The window crash loops are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The longest wait before a restart.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The restart decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a new worker after this delay.
    RestartAfter(Duration),
    /// Too many deaths in the window: unmount.
    GiveUp { deaths: usize, window: Duration },
}

/// Recent worker deaths.
#[derive(Debug, Default)]
pub struct RestartPolicy {
    deaths: VecDeque<Instant>,
}

impl RestartPolicy {
    /// Records a death at `now` and decides.
    pub fn on_death(&mut self, now: Instant) -> Decision {
        while self.deaths.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            self.deaths.pop_front();
        }
        self.deaths.push_back(now);
        let n = self.deaths.len();
        if n > MAX_RESTARTS {
            return Decision::GiveUp { deaths: n, window: WINDOW };
        }
        let delay = match n {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(100) * (1 << (n - 2).min(16)) as u32,
        };
        Decision::RestartAfter(delay.min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_at_once_backs_off_and_gives_up_on_a_crash_loop() {
        let mut policy = RestartPolicy::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(policy.on_death(t0), Decision::RestartAfter(Duration::ZERO));
        assert_eq!(policy.on_death(t0 + ms(1)), Decision::RestartAfter(ms(100)));
        assert_eq!(policy.on_death(t0 + ms(2)), Decision::RestartAfter(ms(200)));
        assert_eq!(policy.on_death(t0 + ms(3)), Decision::RestartAfter(ms(400)));
        assert_eq!(policy.on_death(t0 + ms(4)), Decision::RestartAfter(ms(800)));
        assert_eq!(policy.on_death(t0 + ms(5)), Decision::GiveUp { deaths: 6, window: WINDOW });
    }

    #[test]
    fn deaths_far_apart_are_not_a_loop() {
        let mut policy = RestartPolicy::default();
        let t0 = Instant::now();
        for i in 0..20 {
            let at = t0 + (WINDOW + Duration::from_secs(1)) * i;
            assert_eq!(policy.on_death(at), Decision::RestartAfter(Duration::ZERO), "death {i}");
        }
    }
}
