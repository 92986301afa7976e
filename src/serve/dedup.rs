//! Close each build once, however often and however concurrently its event is delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::reply::Reply;

/// A bounded record of recent closes, keyed by build. The first delivery of a key does the
/// work; concurrent duplicates wait for its answer instead of closing a second time.
pub struct Dedup {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Keys oldest first, each with the id of the entry it was queued for: forgetting a key
    /// leaves its place here stale, to be skipped, so that forgetting costs O(1).
    order: VecDeque<(String, u64)>,
    next_id: u64,
}

struct Entry {
    id: u64,
    settled: watch::Receiver<Settled>,
}

/// What became of a claimed key.
#[derive(Clone)]
enum Settled {
    Running,
    Answered(Reply),
    /// Failed in a way a later delivery may get past (or its closer panicked): claim afresh.
    Forgotten,
}

pub enum Claim {
    /// Nobody has this key: the caller closes, then settles the ticket.
    First(Ticket),
    /// Closed before (or just now, by a delivery we waited for): its answer.
    Duplicate(Reply),
    /// Another delivery is still closing it and the deadline came first.
    StillRunning,
}

/// The right and the duty to settle a key. Dropped unsettled (a panic, a delivery given up),
/// it forgets the key, so that no key stays "running" for ever.
pub struct Ticket {
    dedup: Arc<Dedup>,
    key: String,
    id: u64,
    sender: watch::Sender<Settled>,
    settled: bool,
}

impl Dedup {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Dedup {
            state: Mutex::default(),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn claim(self: &Arc<Self>, key: &str, deadline: Instant) -> Claim {
        loop {
            let mut settled = match self.try_claim(key) {
                Ok(ticket) => return Claim::First(ticket),
                Err(settled) => settled,
            };
            let waited = tokio::time::timeout_at(
                deadline.into(),
                settled.wait_for(|s| !matches!(s, Settled::Running)),
            )
            .await;
            match waited {
                Err(_) => return Claim::StillRunning,
                // The ticket went without a word: treat it as forgotten.
                Ok(Err(_)) => continue,
                Ok(Ok(now)) => match now.clone() {
                    Settled::Answered(reply) => return Claim::Duplicate(reply),
                    Settled::Running | Settled::Forgotten => continue,
                },
            }
        }
    }

    /// A ticket for `key`, or the receiver of whoever holds it.
    fn try_claim(self: &Arc<Self>, key: &str) -> Result<Ticket, watch::Receiver<Settled>> {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get(key) {
            let settled = entry.settled.clone();
            if !matches!(*settled.borrow(), Settled::Forgotten) {
                return Err(settled);
            }
        }
        let (sender, settled) = watch::channel(Settled::Running);
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(key.to_owned(), Entry { id, settled });
        state.order.push_back((key.to_owned(), id));
        state.evict(self.capacity);
        Ok(Ticket {
            dedup: Arc::clone(self),
            key: key.to_owned(),
            id,
            sender,
            settled: false,
        })
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.order.len())
    }
}

impl State {
    /// Forget the oldest answers over `capacity`; a key still running is kept (and looked at
    /// again later), a stale place is dropped.
    fn evict(&mut self, capacity: usize) {
        let mut budget = self.order.len();
        while self.entries.len() > capacity && budget > 0 {
            budget -= 1;
            let Some((key, id)) = self.order.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get(&key).filter(|e| e.id == id) else {
                continue;
            };
            if matches!(*entry.settled.borrow(), Settled::Running) {
                self.order.push_back((key, id));
            } else {
                self.entries.remove(&key);
            }
        }
        // Stale places pile up only as fast as keys are forgotten: sweep them now and then.
        if self.order.len() > 2 * capacity.max(self.entries.len()) {
            let entries = &self.entries;
            self.order
                .retain(|(key, id)| entries.get(key).is_some_and(|e| e.id == *id));
        }
    }
}

impl Ticket {
    /// Record the answer for the key, or with `remember == false` forget it (a failure that a
    /// later delivery may get past); either way, wake whoever waits for it.
    pub fn settle(mut self, reply: &Reply, remember: bool) {
        self.settled = true;
        if remember {
            self.sender.send_replace(Settled::Answered(reply.clone()));
        } else {
            self.forget();
        }
    }

    fn forget(&self) {
        let mut state = self.dedup.lock();
        if state
            .entries
            .get(&self.key)
            .is_some_and(|e| e.id == self.id)
        {
            state.entries.remove(&self.key);
        }
        drop(state);
        self.sender.send_replace(Settled::Forgotten);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn done() -> Reply {
        Reply::new(200, serde_json::json!({"closed": true}))
    }

    #[test]
    fn concurrent_duplicates_wait_and_share_one_answer() {
        let dedup = Dedup::new(100);
        let closes = Arc::new(AtomicUsize::new(0));
        let statuses: Vec<u16> = runtime().block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (dedup, closes) = (Arc::clone(&dedup), Arc::clone(&closes));
                    tokio::spawn(async move {
                        match dedup.claim("wf-1", soon()).await {
                            Claim::First(ticket) => {
                                closes.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                ticket.settle(&done(), true);
                                200
                            }
                            Claim::Duplicate(reply) => reply.status,
                            Claim::StillRunning => 503,
                        }
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.push(task.await.unwrap());
            }
            statuses
        });
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }

    #[test]
    fn a_forgotten_failure_lets_the_next_delivery_try_again() {
        runtime().block_on(async {
            let dedup = Dedup::new(100);
            let Claim::First(ticket) = dedup.claim("k", soon()).await else {
                panic!("first")
            };
            ticket.settle(&Reply::new(502, serde_json::json!({})), false);
            assert!(matches!(dedup.claim("k", soon()).await, Claim::First(_)));
        });
    }

    #[test]
    fn a_ticket_dropped_by_a_panic_frees_its_key_and_wakes_the_waiters() {
        runtime().block_on(async {
            let dedup = Dedup::new(100);
            let Claim::First(ticket) = dedup.claim("k", soon()).await else {
                panic!("first")
            };
            let waiter = {
                let dedup = Arc::clone(&dedup);
                tokio::spawn(async move {
                    match dedup.claim("k", soon()).await {
                        Claim::First(ticket) => {
                            ticket.settle(&done(), true);
                            "took over"
                        }
                        _ => "something else",
                    }
                })
            };
            let closer = std::thread::spawn(move || {
                let _ticket = ticket;
                panic!("a panic mid-close");
            });
            assert!(closer.join().is_err());
            assert_eq!(waiter.await.unwrap(), "took over");
            assert!(matches!(
                dedup.claim("k", soon()).await,
                Claim::Duplicate(_)
            ));
        });
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        runtime().block_on(async {
            let dedup = Dedup::new(100);
            let _first = dedup.claim("k", soon()).await;
            let now = Instant::now() + Duration::from_millis(20);
            assert!(matches!(dedup.claim("k", now).await, Claim::StillRunning));
        });
    }

    #[test]
    fn the_record_is_bounded_forgets_the_oldest_and_sweeps_stale_places() {
        runtime().block_on(async {
            let dedup = Dedup::new(3);
            for key in ["a", "b", "c", "d"] {
                let Claim::First(ticket) = dedup.claim(key, soon()).await else {
                    panic!("{key}")
                };
                ticket.settle(&done(), true);
            }
            assert!(matches!(
                dedup.claim("d", soon()).await,
                Claim::Duplicate(_)
            ));
            let Claim::First(ticket) = dedup.claim("a", soon()).await else {
                panic!("a was forgotten")
            };
            drop(ticket);
            // Many failures in a row: the record stays bounded.
            for i in 0..1000 {
                let Claim::First(ticket) = dedup.claim(&format!("f{i}"), soon()).await else {
                    panic!("f{i}")
                };
                ticket.settle(&Reply::new(502, serde_json::json!({})), false);
            }
            let (entries, order) = dedup.len();
            assert!(
                entries <= 3 && order <= 8,
                "{entries} entries, {order} places"
            );
        });
    }
}
