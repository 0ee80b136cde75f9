//! Which pod version the agent answers from and where its watch starts, decided from GET answers and watch events alone.
//!
//! Two sources report the pod. A GET (no resourceVersion: a quorum read from etcd) is the truth as of now and the
//! only thing that confirms the answer. The watch (served from an API server's watch cache) brings changes at once
//! between GETs, but a cache may lag etcd or stop without a word. So the watch's events are published only while
//! the watch is *anchored*: started after a version the agent already holds, so that everything it delivers is newer
//! (an API server sends a watch only events after its starting resourceVersion, in order). A GET that finds a
//! version the agent does not hold means the watch missed it: the GET's pod is published and the watch restarted
//! after it. resourceVersions are opaque: they are only ever compared for equality.

/// A version of the pod as the API server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// The pod, at this resourceVersion.
    Present(String),
    /// No such pod (a GET answered 404 naming it, or a DELETED event).
    Missing,
}

/// Where the next watch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// After this resourceVersion: only newer events.
    After(String),
    /// `resourceVersion=0`: the API server's cached pod first (a synthetic ADDED), then its events. Needed when there
    /// is no version to start after (the pod is missing) or the one the agent has is older than the API server's
    /// event history (410). The cache may be older than the last GET, so such a watch is not anchored.
    Now,
}

/// What a GET asked: the version the agent held when it was sent.
#[derive(Debug, Clone)]
pub struct GetTicket {
    held: Option<Version>,
}

/// What to do with a GET's answer (the answer is confirmed in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterGet {
    /// The agent holds this version, or a newer one that the watch delivered while the GET was in flight.
    Keep,
    /// Publish the GET's pod; the watch already delivered it and is anchored from now on.
    Publish,
    /// Publish the GET's pod and start the watch after it. `behind`: an open watch had missed this version.
    PublishAndRestart { behind: bool },
}

/// What to do with a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEvent {
    /// Newer than what the agent holds: answer from it.
    Publish,
    /// Not known to be newer (the watch is not anchored): keep it out of the answer.
    Hold,
    /// From a watch that has since been replaced.
    Superseded,
}

#[derive(Debug, Default)]
struct WatchTrack {
    /// Bumped whenever the watch must start over from `start`; events of older generations are dropped.
    generation: u64,
    /// `None` until the first GET answered.
    start: Option<Start>,
    /// The API server accepted the watch of this generation.
    open: bool,
    /// Everything this watch delivers is newer than what the agent held when it was anchored.
    anchored: bool,
    /// The latest version this generation delivered.
    seen: Option<Version>,
}

/// The pure state of following one pod.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The version the answer comes from; `None` before the first GET.
    held: Option<Version>,
    watch: WatchTrack,
}

impl Tracker {
    pub fn held(&self) -> Option<&Version> {
        self.held.as_ref()
    }

    pub fn generation(&self) -> u64 {
        self.watch.generation
    }

    /// A GET is about to be sent.
    pub fn get_sent(&self) -> GetTicket {
        GetTicket {
            held: self.held.clone(),
        }
    }

    /// A GET answered `version`.
    pub fn got(&mut self, ticket: &GetTicket, version: Version) -> AfterGet {
        let watch = &mut self.watch;
        let watch_has_it = watch.open && watch.seen.as_ref() == Some(&version);
        if watch_has_it {
            // The watch delivered exactly what etcd holds now: whatever it sends next is newer.
            watch.anchored = true;
        }
        if self.held.as_ref() == Some(&version) {
            return AfterGet::Keep;
        }
        if ticket.held.as_ref() == Some(&version) && self.held.is_some() {
            // Only an anchored watch changes the held version while a GET is in flight, and it delivers in order:
            // the GET read etcd before the watch's newer event, and the held answer is the newer one.
            return AfterGet::Keep;
        }
        self.held = Some(version.clone());
        if watch_has_it {
            return AfterGet::Publish;
        }
        // The watch missed this version (it lags, or went silent), or there is none yet: start after the GET's
        // version. A restarted watch re-delivers anything newer, so a GET answer that raced a newer event in a way
        // not caught above is corrected one watch start later.
        let behind = watch.open;
        self.order(match version {
            Version::Present(resource_version) => Start::After(resource_version),
            Version::Missing => Start::Now,
        });
        AfterGet::PublishAndRestart { behind }
    }

    /// The watch task asks where to start; `None` until the first GET answered.
    pub fn begin(&self) -> Option<(u64, Start)> {
        let start = self.watch.start.clone()?;
        Some((self.watch.generation, start))
    }

    /// The API server accepted the watch of `generation`; false if it has been replaced meanwhile.
    pub fn opened(&mut self, generation: u64) -> bool {
        let current = generation == self.watch.generation;
        if current {
            self.watch.open = true;
        }
        current
    }

    /// An ADDED, MODIFIED or DELETED event; `resume` is the resourceVersion to resume after.
    pub fn event(&mut self, generation: u64, version: Version, resume: String) -> AfterEvent {
        if generation != self.watch.generation {
            return AfterEvent::Superseded;
        }
        let watch = &mut self.watch;
        watch.start = Some(Start::After(resume));
        watch.seen = Some(version.clone());
        if watch.anchored {
            self.held = Some(version);
            return AfterEvent::Publish;
        }
        if self.held.as_ref() == Some(&version) {
            // Caught up with what the agent holds: its next events are newer.
            watch.anchored = true;
        }
        AfterEvent::Hold
    }

    /// A BOOKMARK: where to resume, nothing about the pod.
    pub fn bookmark(&mut self, generation: u64, resume: String) {
        if generation == self.watch.generation {
            self.watch.start = Some(Start::After(resume));
        }
    }

    /// The watch of `generation` ended or failed; it resumes where it got to.
    pub fn closed(&mut self, generation: u64) {
        if generation == self.watch.generation {
            self.watch.open = false;
        }
    }

    /// The API server no longer has the events after the resume point (410): watch from its current state.
    pub fn expired(&mut self, generation: u64) {
        if generation == self.watch.generation {
            self.order(Start::Now);
        }
    }

    fn order(&mut self, start: Start) {
        let watch = &mut self.watch;
        watch.generation += 1;
        watch.anchored = matches!(start, Start::After(_));
        watch.start = Some(start);
        watch.open = false;
        watch.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rv: &str) -> Version {
        Version::Present(rv.to_owned())
    }

    /// A tracker after the first GET answered `rv` and the watch started after it.
    fn watching_from(rv: &str) -> (Tracker, u64) {
        let mut tracker = Tracker::default();
        let ticket = tracker.get_sent();
        assert_eq!(
            tracker.got(&ticket, v(rv)),
            AfterGet::PublishAndRestart { behind: false }
        );
        let (generation, start) = tracker.begin().unwrap();
        assert_eq!(start, Start::After(rv.to_owned()));
        assert!(tracker.opened(generation));
        (tracker, generation)
    }

    #[test]
    fn the_watch_waits_for_the_first_get_and_starts_after_its_version() {
        let tracker = Tracker::default();
        assert_eq!(tracker.begin(), None);
        let (tracker, _) = watching_from("10");
        assert_eq!(tracker.held(), Some(&v("10")));
    }

    #[test]
    fn events_of_a_watch_started_after_the_held_version_are_published_at_once() {
        let (mut tracker, generation) = watching_from("10");
        assert_eq!(
            tracker.event(generation, v("11"), "11".into()),
            AfterEvent::Publish
        );
        assert_eq!(tracker.held(), Some(&v("11")));
        assert_eq!(
            tracker.event(generation, Version::Missing, "12".into()),
            AfterEvent::Publish
        );
        assert_eq!(tracker.held(), Some(&Version::Missing));
    }

    #[test]
    fn a_get_that_finds_the_held_version_changes_nothing() {
        let (mut tracker, generation) = watching_from("10");
        let ticket = tracker.get_sent();
        assert_eq!(tracker.got(&ticket, v("10")), AfterGet::Keep);
        assert_eq!(tracker.generation(), generation);
    }

    #[test]
    fn a_get_that_finds_a_version_the_watch_missed_publishes_it_and_restarts_the_watch_after_it() {
        let (mut tracker, generation) = watching_from("10");
        let ticket = tracker.get_sent();
        assert_eq!(
            tracker.got(&ticket, v("15")),
            AfterGet::PublishAndRestart { behind: true }
        );
        assert_eq!(tracker.held(), Some(&v("15")));
        let (next, start) = tracker.begin().unwrap();
        assert!(next > generation);
        assert_eq!(start, Start::After("15".into()));
        // The silent watch's late events are dropped.
        assert_eq!(
            tracker.event(generation, v("12"), "12".into()),
            AfterEvent::Superseded
        );
        assert_eq!(tracker.held(), Some(&v("15")));
    }

    #[test]
    fn a_get_that_raced_a_newer_event_keeps_the_newer_answer() {
        let (mut tracker, generation) = watching_from("10");
        let ticket = tracker.get_sent();
        // The event arrives while the GET, which read etcd before that change, is in flight.
        assert_eq!(
            tracker.event(generation, v("11"), "11".into()),
            AfterEvent::Publish
        );
        assert_eq!(tracker.got(&ticket, v("10")), AfterGet::Keep);
        assert_eq!(tracker.held(), Some(&v("11")));
        assert_eq!(tracker.generation(), generation, "no restart");
    }

    #[test]
    fn a_get_newer_than_an_event_still_in_flight_restarts_the_watch_after_it() {
        let (mut tracker, generation) = watching_from("10");
        let ticket = tracker.get_sent();
        assert_eq!(
            tracker.got(&ticket, v("11")),
            AfterGet::PublishAndRestart { behind: true }
        );
        assert_eq!(
            tracker.event(generation, v("11"), "11".into()),
            AfterEvent::Superseded
        );
        assert_eq!(tracker.held(), Some(&v("11")));
    }

    #[test]
    fn a_get_while_no_watch_is_open_moves_the_start_without_counting_a_behind_watch() {
        let (mut tracker, generation) = watching_from("10");
        tracker.closed(generation);
        let ticket = tracker.get_sent();
        assert_eq!(
            tracker.got(&ticket, v("12")),
            AfterGet::PublishAndRestart { behind: false }
        );
        assert_eq!(tracker.begin().unwrap().1, Start::After("12".into()));
    }

    #[test]
    fn after_a_410_the_watch_starts_from_now_and_holds_its_events_until_it_agrees_with_the_agent() {
        let (mut tracker, generation) = watching_from("10");
        tracker.closed(generation);
        tracker.expired(generation);
        let (generation, start) = tracker.begin().unwrap();
        assert_eq!(start, Start::Now);
        assert!(tracker.opened(generation));
        // A lagging cache shows an older pod: not published.
        assert_eq!(
            tracker.event(generation, v("8"), "9".into()),
            AfterEvent::Hold
        );
        assert_eq!(tracker.held(), Some(&v("10")));
        // It catches up with the held version: anchored, newer events are published.
        assert_eq!(
            tracker.event(generation, v("10"), "10".into()),
            AfterEvent::Hold
        );
        assert_eq!(
            tracker.event(generation, v("11"), "11".into()),
            AfterEvent::Publish
        );
        assert_eq!(tracker.held(), Some(&v("11")));
    }

    #[test]
    fn a_watch_from_now_that_saw_a_newer_pod_is_anchored_by_the_get_that_agrees() {
        let (mut tracker, generation) = watching_from("10");
        tracker.expired(generation);
        let (generation, _) = tracker.begin().unwrap();
        assert!(tracker.opened(generation));
        assert_eq!(
            tracker.event(generation, v("12"), "12".into()),
            AfterEvent::Hold
        );
        let ticket = tracker.get_sent();
        assert_eq!(tracker.got(&ticket, v("12")), AfterGet::Publish);
        assert_eq!(tracker.generation(), generation, "no restart");
        assert_eq!(
            tracker.event(generation, v("13"), "13".into()),
            AfterEvent::Publish
        );
    }

    #[test]
    fn a_missing_pod_is_watched_from_now() {
        let (mut tracker, _) = watching_from("10");
        let ticket = tracker.get_sent();
        assert_eq!(
            tracker.got(&ticket, Version::Missing),
            AfterGet::PublishAndRestart { behind: true }
        );
        let (generation, start) = tracker.begin().unwrap();
        assert_eq!(start, Start::Now);
        assert!(tracker.opened(generation));
        // A recreated pod (or a lagging cache's old one) waits for a GET.
        assert_eq!(
            tracker.event(generation, v("20"), "20".into()),
            AfterEvent::Hold
        );
        let ticket = tracker.get_sent();
        assert_eq!(tracker.got(&ticket, v("20")), AfterGet::Publish);
    }

    #[test]
    fn bookmarks_and_events_move_the_resume_point() {
        let (mut tracker, generation) = watching_from("10");
        tracker.bookmark(generation, "30".into());
        tracker.closed(generation);
        assert_eq!(
            tracker.begin(),
            Some((generation, Start::After("30".into())))
        );
        assert!(tracker.opened(generation));
        tracker.event(generation, v("31"), "31".into());
        tracker.closed(generation);
        assert_eq!(
            tracker.begin(),
            Some((generation, Start::After("31".into())))
        );
    }
}
