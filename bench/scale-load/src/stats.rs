//! Percentiles and the `RESULT key=value` lines that bench/scale turns into its table.

use std::time::Duration;

/// The `q` quantile (0..=1) of `samples` by nearest rank; zero for no samples.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// The median of plain numbers (the rounds of a probe); zero for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One figure for the table: `RESULT key=value`, flushed at once (the script reads it while we run).
pub fn result(key: &str, value: impl std::fmt::Display) {
    use std::io::Write as _;
    println!("RESULT {key}={value}");
    let _ = std::io::stdout().flush();
}
