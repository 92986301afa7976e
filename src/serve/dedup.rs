//! Close each build once, however often and however concurrently its event is delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::Reply;

/// A bounded record of recent closes, keyed by build. The first delivery of a key does the
/// work; concurrent duplicates wait for its answer instead of closing a second time.
pub struct Dedup {
    state: Mutex<State>,
    settled: Condvar,
    capacity: usize,
}

struct State {
    entries: HashMap<String, Entry>,
    /// Keys oldest first, to forget the oldest answers once over capacity.
    order: VecDeque<String>,
}

enum Entry {
    Running,
    Done(Reply),
}

pub enum Claim {
    /// Nobody has this key: the caller must close, then call [`Dedup::settle`].
    First,
    /// Closed before (or just now, by a delivery we waited for): its answer.
    Duplicate(Reply),
    /// Another delivery is still closing it and the deadline came first.
    StillRunning,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            settled: Condvar::new(),
            capacity,
        }
    }

    pub fn claim(&self, key: &str, deadline: Instant) -> Claim {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match state.entries.get(key) {
                None => break,
                Some(Entry::Done(reply)) => return Claim::Duplicate(reply.clone()),
                Some(Entry::Running) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Claim::StillRunning;
                    }
                    state = self
                        .settled
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        state.entries.insert(key.to_owned(), Entry::Running);
        state.order.push_back(key.to_owned());
        // Forget the oldest settled answers; one still running is kept and looked at again later.
        let mut budget = state.order.len();
        while state.entries.len() > self.capacity && budget > 0 {
            budget -= 1;
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            match state.entries.get(&oldest) {
                Some(Entry::Running) => state.order.push_back(oldest),
                _ => {
                    state.entries.remove(&oldest);
                }
            }
        }
        Claim::First
    }

    /// Record the answer for `key`, or with `remember == false` forget the key (a failure
    /// that a later delivery may get past), then wake whoever waits for it.
    pub fn settle(&self, key: &str, reply: &Reply, remember: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if remember {
            state
                .entries
                .insert(key.to_owned(), Entry::Done(reply.clone()));
        } else {
            state.entries.remove(key);
            state.order.retain(|k| k != key);
        }
        drop(state);
        self.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn concurrent_duplicates_wait_and_share_one_answer() {
        let once = Arc::new(Dedup::new(100));
        let closes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (once, closes) = (Arc::clone(&once), Arc::clone(&closes));
                std::thread::spawn(move || match once.claim("wf-1", soon()) {
                    Claim::First => {
                        closes.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        let reply = Reply::new(200, serde_json::json!({"closed": true}));
                        once.settle("wf-1", &reply, true);
                        reply.status
                    }
                    Claim::Duplicate(reply) => reply.status,
                    Claim::StillRunning => 503,
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }

    #[test]
    fn a_forgotten_failure_lets_the_next_delivery_try_again() {
        let once = Dedup::new(100);
        assert!(matches!(once.claim("k", soon()), Claim::First));
        once.settle("k", &Reply::new(502, serde_json::json!({})), false);
        assert!(matches!(once.claim("k", soon()), Claim::First));
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        let once = Dedup::new(100);
        assert!(matches!(once.claim("k", soon()), Claim::First));
        let now = Instant::now() + Duration::from_millis(20);
        assert!(matches!(once.claim("k", now), Claim::StillRunning));
    }

    #[test]
    fn the_record_is_bounded_and_forgets_the_oldest() {
        let once = Dedup::new(3);
        let done = Reply::new(200, serde_json::json!({}));
        for key in ["a", "b", "c", "d"] {
            assert!(matches!(once.claim(key, soon()), Claim::First));
            once.settle(key, &done, true);
        }
        assert!(matches!(once.claim("d", soon()), Claim::Duplicate(_)));
        assert!(
            matches!(once.claim("a", soon()), Claim::First),
            "a was forgotten"
        );
    }
}
