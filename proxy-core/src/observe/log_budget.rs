//! [`LogBudget`]: at most so many log lines of one kind per second, so that an outage (every
//! request failing upstream) does not turn into thousands of identical ERROR lines a second.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Lets `per_second` lines through in each second and counts the rest; the first line let
/// through after some were held back is preceded by one line saying how many.
#[derive(Debug)]
pub(crate) struct LogBudget {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_second` lines a second.
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                started: Instant::now(),
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now (`what` names the lines in the summary).
    pub(crate) fn allow(&self, what: &str) -> bool {
        self.allow_at(Instant::now(), what)
    }

    fn allow_at(&self, now: Instant, what: &str) -> bool {
        let mut window = self.window.lock();
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            if window.suppressed > 0 {
                tracing::error!(
                    suppressed = window.suppressed,
                    "{} more {what} lines were not logged in the last second",
                    window.suppressed
                );
            }
            *window = Window {
                started: now,
                used: 0,
                suppressed: 0,
            };
        }
        if window.used < self.per_second {
            window.used += 1;
            return true;
        }
        window.suppressed += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_the_budget_through_each_second_and_counts_the_rest() {
        let budget = LogBudget::new(3);
        let start = Instant::now();
        let first: Vec<bool> = (0..5).map(|_| budget.allow_at(start, "x")).collect();
        assert_eq!(first, [true, true, true, false, false]);
        assert_eq!(budget.window.lock().suppressed, 2);
        let later = start + Duration::from_millis(1001);
        assert!(budget.allow_at(later, "x"));
        assert_eq!(budget.window.lock().suppressed, 0);
    }
}
