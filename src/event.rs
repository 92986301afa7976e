//! GitHub's event payload (`GITHUB_EVENT_PATH`): a push's head commit, and where a pull
//! request comes from. Untrusted input: a missing, unreadable, huge or malformed file is
//! skipped with the reason, never a failure.

use std::io::Read;

use serde_json::Value;

/// Larger than any event GitHub sends.
const MAX_EVENT: u64 = 25 << 20;

/// An event, read as any JSON (the closer reads Coveralls' answers so too: no parser of
/// its own for this one, in the binary every run downloads).
#[derive(Debug)]
pub struct Event(Value);

/// A person in an event: a commit's author or committer.
pub struct Person<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// The event at `path`, or why it was skipped.
pub fn read(path: &str) -> Result<Event, String> {
    let file = std::fs::File::open(path).map_err(|err| format!("cannot open {path}: {err}"))?;
    let mut text = Vec::new();
    file.take(MAX_EVENT + 1)
        .read_to_end(&mut text)
        .map_err(|err| format!("cannot read {path}: {err}"))?;
    if text.len() as u64 > MAX_EVENT {
        return Err(format!("{path} is over {MAX_EVENT} bytes"));
    }
    match serde_json::from_slice(&text) {
        Ok(value @ Value::Object(_)) => Ok(Event(value)),
        Ok(_) => Err(format!("{path} is not an event: not a JSON object")),
        Err(err) => Err(format!("{path} is not an event: {err}")),
    }
}

impl Event {
    fn text(&self, pointer: &str) -> Option<&str> {
        self.0.pointer(pointer)?.as_str()
    }

    /// A push's head commit's id.
    pub fn head_commit_id(&self) -> Option<&str> {
        self.text("/head_commit/id")
    }

    pub fn head_commit_message(&self) -> Option<&str> {
        self.text("/head_commit/message")
    }

    /// The head commit's `author` or `committer`.
    pub fn head_commit_person(&self, role: &str) -> Person<'_> {
        Person {
            name: self.text(&format!("/head_commit/{role}/name")),
            email: self.text(&format!("/head_commit/{role}/email")),
        }
    }

    /// Whether the event is a pull request from another repository than `repository`.
    pub fn comes_from_a_fork(&self, repository: Option<&str>) -> bool {
        let fork = self.0.pointer("/pull_request/head/repo/fork");
        let full_name = self.text("/pull_request/head/repo/full_name");
        fork.and_then(Value::as_bool) == Some(true)
            || full_name.is_some() && full_name != repository
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.json");
        std::fs::write(&path, text).unwrap();
        (dir, path.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_push_and_a_pull_request_comes_from_a_fork() {
        let (_dir, path) = write(
            br#"{"head_commit": {"id": "abc", "message": "m", "author": {"name": "A"}},
                "pull_request": {"head": {"repo": {"fork": false, "full_name": "other/cat"}}},
                "unknown": [1, 2, 3]}"#,
        );
        let event = read(&path).unwrap();
        assert_eq!(event.head_commit_id(), Some("abc"));
        assert_eq!(event.head_commit_person("author").name, Some("A"));
        let (_dir, path) = write(br#"{"pull_request": {"head": {"repo": {"fork": true}}}}"#);
        assert!(read(&path).unwrap().comes_from_a_fork(Some("octo/cat")));
        let (_dir, path) =
            write(br#"{"pull_request": {"head": {"repo": {"full_name": "octo/cat"}}}}"#);
        assert!(!read(&path).unwrap().comes_from_a_fork(Some("octo/cat")));
        assert!(read(&path).unwrap().comes_from_a_fork(Some("octo/dog")));
    }

    #[test]
    fn a_missing_malformed_or_huge_file_is_skipped_with_the_reason() {
        assert!(
            read("/nonexistent/event.json")
                .unwrap_err()
                .contains("cannot open")
        );
        let (_dir, path) = write(b"{not json");
        assert!(read(&path).unwrap_err().contains("is not an event"));
        let (_dir, path) = write(b"[1, 2]");
        assert!(read(&path).unwrap_err().contains("not a JSON object"));
        let mut huge = b"{\"x\": \"".to_vec();
        huge.resize((MAX_EVENT + 10) as usize, b'a');
        let (_dir, path) = write(&huge);
        assert!(read(&path).unwrap_err().contains("is over"));
    }
}
