//! Failpoints: named places where a debug build can be made to fail on purpose, so that the
//! tests can check what a failure there leaves behind. They are armed at start from
//! `COVERALLS_FINISH_FAILPOINTS`, a comma-separated list of `NAME[=[COUNT*]ACTION]`: the
//! action is `panic` (the default) or `abort` (the process dies at once, as in a crash), and
//! a count makes it happen only the first COUNT times the place is reached. Release builds
//! never read the variable, and [`failpoint`] is nothing in them.

use crate::env::Env;
use crate::error::Error;

/// Every failpoint there is, named for where it is (and what it was first made for: any can
/// abort as well); arming any other name is a configuration error.
#[cfg(debug_assertions)]
const POINTS: &[&str] = &[
    "panic-in-verdict",
    "panic-in-close",
    // The delivery is committed, and not answered yet.
    "after-commit",
    // Coveralls has answered an attempt, and its outcome is not recorded yet.
    "after-attempt",
];

/// Arm the failpoints the environment names.
#[cfg(debug_assertions)]
pub fn arm(env: &Env) -> Result<(), Error> {
    const VAR: &str = "COVERALLS_FINISH_FAILPOINTS";
    if let Some(spec) = env.get(VAR)? {
        let points = armed::parse(spec).map_err(|why| Error::config(format!("{VAR}: {why}")))?;
        // Armed once a process: a receiver starts once.
        let _ = armed::ARMED.set(points);
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
pub fn arm(_env: &Env) -> Result<(), Error> {
    Ok(())
}

/// Fail here, if the failpoint `name` is armed.
#[cfg(debug_assertions)]
pub fn failpoint(name: &str) {
    debug_assert!(POINTS.contains(&name), "failpoint {name} is not in POINTS");
    let armed = armed::ARMED.get().into_iter().flatten();
    if let Some(point) = armed.filter(|point| point.name == name).find(|p| p.fires()) {
        match point.action {
            armed::Action::Panic => panic!("failpoint {name}: a panic on purpose"),
            armed::Action::Abort => {
                eprintln!("failpoint {name}: aborting on purpose");
                std::process::abort();
            }
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::POINTS;

    pub static ARMED: OnceLock<Vec<Point>> = OnceLock::new();

    pub struct Point {
        pub name: String,
        pub action: Action,
        /// How many more times it fires; `None`: every time.
        left: Option<AtomicU32>,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Action {
        Panic,
        Abort,
    }

    impl Point {
        /// Whether it fires this time (and one time fewer from now on).
        pub fn fires(&self) -> bool {
            let Some(left) = &self.left else {
                return true;
            };
            let take = |n: u32| n.checked_sub(1);
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                .is_ok()
        }
    }

    /// `NAME[=[COUNT*]ACTION],…`; the error says what was wrong.
    pub fn parse(spec: &str) -> Result<Vec<Point>, String> {
        let mut points = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, how) = entry.split_once('=').unwrap_or((entry, "panic"));
            if !POINTS.contains(&name) {
                return Err(format!(
                    "no failpoint is named {name:?}; expected one of {}",
                    POINTS.join(", ")
                ));
            }
            let (count, action) = match how.split_once('*') {
                Some((count, action)) => match count.parse::<u32>() {
                    Ok(count) => (Some(AtomicU32::new(count)), action),
                    Err(_) => return Err(format!("{name}: the count {count:?} is not a number")),
                },
                None => (None, how),
            };
            let action = match action {
                "panic" => Action::Panic,
                "abort" => Action::Abort,
                other => {
                    return Err(format!(
                        "{name}: the action {other:?} is neither panic nor abort"
                    ));
                }
            };
            points.push(Point {
                name: name.to_owned(),
                action,
                left: count,
            });
        }
        Ok(points)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn points_fire_as_often_as_they_are_told() {
            let points = parse("panic-in-verdict, panic-in-close=2*abort").unwrap();
            let [always, twice] = points.as_slice() else {
                panic!("two points");
            };
            assert_eq!(
                (always.name.as_str(), always.action),
                ("panic-in-verdict", Action::Panic)
            );
            assert!((0..5).all(|_| always.fires()));
            assert_eq!(twice.action, Action::Abort);
            let fired: Vec<bool> = (0..4).map(|_| twice.fires()).collect();
            assert_eq!(fired, [true, true, false, false]);
        }

        #[test]
        fn bad_specs_say_what_is_wrong() {
            let error = |spec: &str| parse(spec).err().unwrap();
            assert_eq!(
                error("after-lunch"),
                "no failpoint is named \"after-lunch\"; expected one of panic-in-verdict, \
                 panic-in-close, after-commit, after-attempt"
            );
            assert_eq!(
                error("panic-in-close=x*panic"),
                "panic-in-close: the count \"x\" is not a number"
            );
            assert_eq!(
                error("panic-in-close=explode"),
                "panic-in-close: the action \"explode\" is neither panic nor abort"
            );
        }
    }
}
