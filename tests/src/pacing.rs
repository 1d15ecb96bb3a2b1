//! A client's pacing judged from when its requests arrived at the server (the mock's arrival log,
//! refused requests included), not from what the server's limiter let through.

use std::time::Duration;

/// The most arrivals in any window of `window` length: checked at every arrival, the start of
/// each window being one (the busiest window can always be moved to start at an arrival).
pub fn most_in_any_window(arrivals: &[Duration], window: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let mut most = 0;
    let mut end = 0;
    for (start, &at) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < at + window {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn counts_the_busiest_window_starting_at_any_arrival() {
        let window = Duration::from_millis(100);
        assert_eq!(most_in_any_window(&[], window), 0);
        assert_eq!(most_in_any_window(&ms(&[0, 100, 200]), window), 1);
        // 150..249 holds five; arrival order does not matter.
        assert_eq!(
            most_in_any_window(&ms(&[199, 0, 10, 20, 150, 160, 170, 180, 260]), window),
            5
        );
    }
}
