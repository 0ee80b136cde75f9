//! The pod's timetable: GET rounds derived from `MAX_STALENESS` so that a healthy API confirms the state well within
//! it, and the lifetime of the watch beside them.

use std::time::Duration;

/// Shortest round: a GET every quarter second is already more than any pod's status is worth.
const MIN_ROUND: Duration = Duration::from_millis(250);
/// Longest round, and the longest watch: under 5 minutes, the watch timeout client-go's reflectors use, which API
/// servers and the load balancers in front of them are tuned for.
const MAX_ROUND: Duration = Duration::from_secs(290);
/// A GET or a watch start slower than this is a broken API, whatever `MAX_STALENESS` says.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Caps the wait between retries, so the true state is back within seconds once the API answers again.
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// How much shorter than [`Schedule::round`] a round (and than [`Schedule::watch`] a watch) may be. Agents that
/// (re)connected together, after an API server restart or a rollout, would otherwise send their GETs in lockstep
/// for ever (10,000 in the same second) and restart their watches together; drawn anew each time, the lengths
/// drift apart. Only shorter, never longer: the freshness budget is kept.
pub const ROUND_JITTER: f64 = 0.2;

/// When the agent GETs its pod, how long it waits for an answer, how it backs off, how long a watch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Every round is one GET of the pod (without resourceVersion: a quorum read from etcd, the only confirmation).
    /// Half of `MAX_STALENESS`, so that the next GET lands before the state goes stale even after one failure.
    pub round: Duration,
    /// Longest wait for the answer to a GET or for a watch to start; a blackholed API server is noticed here.
    pub request_timeout: Duration,
    /// The longest `timeoutSeconds` of a watch; the API server ends it, the agent resumes it from its last
    /// resourceVersion. Not part of the freshness budget: the watch only brings changes early.
    pub watch: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Schedule {
    pub fn for_max_staleness(max_staleness: Duration) -> Self {
        let round = (max_staleness / 2).clamp(MIN_ROUND, MAX_ROUND);
        Self {
            round,
            request_timeout: round.min(MAX_REQUEST_TIMEOUT),
            watch: MAX_ROUND,
            backoff_min: BACKOFF_MIN,
            backoff_max: round.clamp(Duration::from_millis(500), BACKOFF_CAP),
        }
    }

    /// The length of the next round: somewhere in `[(1 - ROUND_JITTER) × round, round]`.
    pub fn round_length(&self) -> Duration {
        self.round_length_with(fastrand::f64())
    }

    /// `random` in `[0, 1)` picks how much shorter than `round` this round is.
    pub fn round_length_with(&self, random: f64) -> Duration {
        self.round - self.round.mul_f64(ROUND_JITTER * random.clamp(0.0, 1.0))
    }

    /// `timeoutSeconds` of the next watch: somewhere in `[(1 - ROUND_JITTER) × watch, watch]`, whole seconds.
    pub fn watch_timeout_secs(&self) -> u32 {
        self.watch_timeout_secs_with(fastrand::f64())
    }

    /// `random` in `[0, 1)` picks how much shorter than `watch` this watch is.
    pub fn watch_timeout_secs_with(&self, random: f64) -> u32 {
        let lifetime = self.watch - self.watch.mul_f64(ROUND_JITTER * random.clamp(0.0, 1.0));
        u32::try_from(lifetime.as_secs().max(1)).unwrap_or(u32::MAX)
    }
}

/// Exponential backoff with equal jitter: agents that lost the API together do not come back together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(schedule: &Schedule) -> Self {
        Self {
            min: schedule.backoff_min,
            max: schedule.backoff_max,
            next: schedule.backoff_min,
        }
    }

    /// The wait before the next attempt: at least the server's `Retry-After` hint, never more than the cap.
    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        self.delay_with(retry_after, fastrand::f64())
    }

    /// `random` in `[0, 1)` picks the point between half the step and the whole step.
    pub fn delay_with(&mut self, retry_after: Option<Duration>, random: f64) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let jittered = step / 2 + step.mul_f64(random.clamp(0.0, 1.0) / 2.0);
        jittered.max(retry_after.unwrap_or_default()).min(self.max)
    }

    /// After a round that ran its course: the next failure starts from the shortest wait again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_staleness_gets_the_pod_every_15_s_and_waits_at_most_4_s_between_retries() {
        let schedule = Schedule::for_max_staleness(Duration::from_secs(30));
        assert_eq!(schedule.round, Duration::from_secs(15));
        assert_eq!(schedule.request_timeout, Duration::from_secs(15));
        assert_eq!(schedule.backoff_max, Duration::from_secs(4));
    }

    #[test]
    fn a_short_staleness_gives_short_rounds_but_the_same_long_watch() {
        let schedule = Schedule::for_max_staleness(Duration::from_secs(2));
        assert_eq!(schedule.round, Duration::from_secs(1));
        assert_eq!(schedule.backoff_max, Duration::from_secs(1));
        assert_eq!(schedule.watch, MAX_ROUND);
        let tiny = Schedule::for_max_staleness(Duration::from_millis(100));
        assert_eq!(tiny.round, MIN_ROUND);
    }

    #[test]
    fn a_watch_lives_between_232_and_290_s_drawn_anew_each_time() {
        let schedule = Schedule::for_max_staleness(Duration::from_secs(30));
        assert_eq!(schedule.watch_timeout_secs_with(0.0), 290);
        assert_eq!(schedule.watch_timeout_secs_with(1.0), 232);
        let drawn: std::collections::HashSet<u32> =
            (0..1000).map(|_| schedule.watch_timeout_secs()).collect();
        assert!(
            drawn.iter().all(|secs| (232..=290).contains(secs)),
            "{drawn:?}"
        );
        assert!(drawn.len() > 30, "spread over the range: {}", drawn.len());
    }

    #[test]
    fn a_long_staleness_keeps_the_round_under_the_api_servers_own_watch_timeout() {
        let schedule = Schedule::for_max_staleness(Duration::from_secs(3600));
        assert_eq!(schedule.round, MAX_ROUND);
        assert_eq!(schedule.request_timeout, MAX_REQUEST_TIMEOUT);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_starts_over_after_a_reset() {
        let mut backoff = Backoff::new(&Schedule::for_max_staleness(Duration::from_secs(30)));
        let at_least: Vec<Duration> = (0..8).map(|_| backoff.delay_with(None, 0.0)).collect();
        assert_eq!(at_least[0], Duration::from_millis(50));
        assert_eq!(at_least[1], Duration::from_millis(100));
        assert_eq!(at_least[7], Duration::from_secs(2));
        assert!(backoff.delay_with(None, 0.999) <= Duration::from_secs(4));
        backoff.reset();
        let after_reset = backoff.delay_with(None, 0.999);
        assert!(
            (Duration::from_millis(50)..Duration::from_millis(100)).contains(&after_reset),
            "{after_reset:?}"
        );
    }

    #[test]
    fn a_round_is_never_longer_than_half_the_staleness_and_at_most_a_fifth_shorter() {
        let schedule = Schedule::for_max_staleness(Duration::from_secs(30));
        assert_eq!(schedule.round_length_with(0.0), Duration::from_secs(15));
        assert_eq!(
            schedule.round_length_with(0.5),
            Duration::from_millis(13_500)
        );
        assert_eq!(schedule.round_length_with(1.0), Duration::from_secs(12));
        for _ in 0..1000 {
            let round = schedule.round_length();
            assert!(
                (Duration::from_secs(12)..=Duration::from_secs(15)).contains(&round),
                "{round:?}"
            );
        }
    }

    #[test]
    fn agents_that_reconnect_together_do_not_get_together() {
        // 1,000 agents back at the same instant (an API server restart): where their next GETs land.
        let schedule = Schedule::for_max_staleness(Duration::from_secs(30));
        let mut rng = fastrand::Rng::with_seed(16);
        let mut at: Vec<Duration> = vec![Duration::ZERO; 1000];
        let busiest_100ms = |at: &[Duration]| {
            let mut bins = std::collections::HashMap::new();
            for t in at {
                *bins.entry(t.as_millis() / 100).or_insert(0) += 1;
            }
            bins.into_values().max().unwrap_or(0)
        };
        for t in &mut at {
            *t += schedule.round_length_with(rng.f64());
        }
        // Over a window of 3 s (a fifth of the round): about 33 per 100 ms, never the whole fleet.
        assert!(busiest_100ms(&at) <= 100, "{}", busiest_100ms(&at));
        for _ in 0..9 {
            for t in &mut at {
                *t += schedule.round_length_with(rng.f64());
            }
        }
        assert!(
            busiest_100ms(&at) <= 30,
            "after 10 rounds: {}",
            busiest_100ms(&at)
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let mut backoff = Backoff::new(&Schedule::for_max_staleness(Duration::from_secs(30)));
        assert_eq!(
            backoff.delay_with(Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff.delay_with(Some(Duration::from_secs(60)), 0.0),
            Duration::from_secs(4)
        );
    }
}
