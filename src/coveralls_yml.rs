//! `.coveralls.yml`, read as coverage-reporter reads it (`yaml_config.cr`): a mapping at the
//! top whose `repo_token` (else `repo_secret_token`), `service_name`, `repo_name`, `endpoint`
//! and `carryforward` count, each under the environment; other keys are no error. A missing
//! file is none, unless it was named; a malformed one is a configuration error that names it.
//!
//! The YAML is saphyr-parser's, event by event: the few keys that count are text, so this
//! walks the top mapping, skips what is nested, and follows aliases to text.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};

use crate::error::Error;
use crate::settings::Key;

/// What the file says, each key only where it holds text (trimmed, not blank). No `Debug`:
/// it holds a token.
#[derive(Default)]
pub struct CoverallsYml {
    /// The file as named, for messages.
    pub path: String,
    repo_token: Option<String>,
    repo_secret_token: Option<String>,
    service_name: Option<String>,
    repo_name: Option<String>,
    endpoint: Option<String>,
    carryforward: Option<String>,
}

impl CoverallsYml {
    /// The file's value for the setting `key`, and the key it was under; `None` for a setting
    /// that coverage-reporter does not read from the file.
    pub fn get(&self, key: Key) -> Option<(&'static str, &str)> {
        let (name, value) = match key {
            Key::RepoToken if self.repo_token.is_none() => {
                ("repo_secret_token", &self.repo_secret_token)
            }
            Key::RepoToken => ("repo_token", &self.repo_token),
            Key::ServiceName => ("service_name", &self.service_name),
            Key::RepoName => ("repo_name", &self.repo_name),
            Key::Endpoint => ("endpoint", &self.endpoint),
            Key::Carryforward => ("carryforward", &self.carryforward),
            _ => return None,
        };
        Some((name, value.as_deref()?))
    }

    /// The place for `key`'s value, if it is one that counts.
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "repo_token" => &mut self.repo_token,
            "repo_secret_token" => &mut self.repo_secret_token,
            "service_name" => &mut self.service_name,
            "repo_name" => &mut self.repo_name,
            "endpoint" => &mut self.endpoint,
            "carryforward" => &mut self.carryforward,
            _ => return None,
        })
    }
}

/// The file at `path`; where it does not exist, nothing, unless it was `named` (by a flag).
pub fn read(path: &str, named: bool) -> Result<CoverallsYml, Error> {
    let mut file = CoverallsYml {
        path: path.to_owned(),
        ..CoverallsYml::default()
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !named => return Ok(file),
        Err(err) => return Err(Error::config(format!("{path} cannot be read: {err}"))),
    };
    let bad = |why: String| {
        Error::config(format!(
            "{path} is not the YAML that coverage-reporter reads: {why}; expected a mapping \
             such as `repo_token: …` (see README: .coveralls.yml)"
        ))
    };
    for (key, value) in top_level_text(&text).map_err(bad)? {
        if let Some(slot) = file.slot(&key) {
            // The last of a key twice wins, as in coverage-reporter.
            *slot = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        }
    }
    Ok(file)
}

/// One node of the YAML, as far as it matters here.
enum Node {
    /// A scalar, `None` where it is null (`~`, `null`, or nothing).
    Text(Option<String>),
    /// A sequence or a mapping, skipped whole.
    Nested,
}

/// The events of one YAML text, and the text of each anchor seen so far.
struct Events<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: Vec<(usize, Option<String>)>,
}

/// The top mapping's keys that are text, each with its value where that is text too (`None`
/// for null); a key whose value is nested is an error where it is one that counts.
fn top_level_text(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut events = Events {
        parser: Parser::new_from_str(text),
        anchors: Vec::new(),
    };
    // The first document's root; an empty file, or one that is null, holds nothing.
    let root = loop {
        match events.next()?.0 {
            Event::StreamStart | Event::DocumentStart(_) => {}
            Event::StreamEnd => return Ok(Vec::new()),
            event => break event,
        }
    };
    if !matches!(root, Event::MappingStart(..)) {
        return match events.node(root)? {
            Node::Text(None) => Ok(Vec::new()),
            _ => Err("its top is not a mapping".to_owned()),
        };
    }
    let mut pairs = Vec::new();
    loop {
        let key = match events.next()?.0 {
            Event::MappingEnd => return Ok(pairs),
            event => events.node(event)?,
        };
        let (event, span) = events.next()?;
        match (key, events.node(event)?) {
            (Node::Text(Some(key)), Node::Text(value)) => pairs.push((key, value)),
            (Node::Text(Some(key)), Node::Nested)
                if CoverallsYml::default().slot(&key).is_some() =>
            {
                return Err(format!(
                    "{key} (line {}) is a list or a mapping, not text",
                    span.start.line()
                ));
            }
            _ => {}
        }
    }
}

impl<'a> Events<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), String> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(err)) => Err(scan_error(&err)),
            None => Err("it ends in the middle".to_owned()),
        }
    }

    /// The node that `event` starts, read to its end.
    fn node(&mut self, event: Event<'a>) -> Result<Node, String> {
        Ok(match event {
            Event::Scalar(value, style, anchor, _) => {
                let null = style == ScalarStyle::Plain
                    && matches!(&*value, "" | "~" | "null" | "Null" | "NULL");
                let text = (!null).then(|| value.into_owned());
                if anchor > 0 {
                    self.anchors.push((anchor, text.clone()));
                }
                Node::Text(text)
            }
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _)| *a == id) {
                Some((_, text)) => Node::Text(text.clone()),
                None => Node::Nested,
            },
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // Skipped by counting, not by recursion: no depth of nesting runs the stack out.
                let mut depth = 1;
                while depth > 0 {
                    match self.next()?.0 {
                        Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                        Event::SequenceEnd | Event::MappingEnd => depth -= 1,
                        scalar @ Event::Scalar(..) => drop(self.node(scalar)?),
                        _ => {}
                    }
                }
                Node::Nested
            }
            // The parser gives no other event where a node starts.
            _ => return Err("a node of a kind it cannot have".to_owned()),
        })
    }
}

/// The parser's complaint and where: never the text itself, which may hold a token.
fn scan_error(err: &ScanError) -> String {
    let at = err.marker();
    format!(
        "{} at line {}, column {}",
        err.info(),
        at.line(),
        at.col() + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<CoverallsYml, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, text).unwrap();
        read(path.to_str().unwrap(), true).map_err(|err| err.to_string())
    }

    #[test]
    fn the_keys_that_count_under_the_top_mapping() {
        let file = parsed(
            "# comment\nrepo_token: tok\nservice_name: 'travis-pro'\nrepo_name: \"o/r\"\n\
             endpoint: https://cov.example\ncarryforward: a,b\nparallel: true\n\
             nested: {repo_token: other}\n",
        )
        .unwrap();
        assert_eq!(file.get(Key::RepoToken), Some(("repo_token", "tok")));
        assert_eq!(
            file.get(Key::ServiceName),
            Some(("service_name", "travis-pro"))
        );
        assert_eq!(file.get(Key::RepoName), Some(("repo_name", "o/r")));
        assert_eq!(
            file.get(Key::Endpoint),
            Some(("endpoint", "https://cov.example"))
        );
        assert_eq!(file.get(Key::Carryforward), Some(("carryforward", "a,b")));
        assert_eq!(file.get(Key::BuildNumber), None);
    }

    #[test]
    fn the_secret_token_where_there_is_no_other_and_nulls_are_nothing() {
        let file = parsed("repo_token: ~\nrepo_secret_token: s3\nservice_name:\n").unwrap();
        assert_eq!(file.get(Key::RepoToken), Some(("repo_secret_token", "s3")));
        assert_eq!(file.get(Key::ServiceName), None);
        let file = parsed("repo_token: a\nrepo_secret_token: b\nrepo_name: '  '\n").unwrap();
        assert_eq!(file.get(Key::RepoToken), Some(("repo_token", "a")));
        assert_eq!(file.get(Key::RepoName), None, "blank is nothing");
    }

    #[test]
    fn numbers_and_aliases_are_text_and_empty_files_hold_nothing() {
        let file = parsed("base: &name octo/cat\nrepo_name: *name\ncarryforward: 12\n").unwrap();
        assert_eq!(file.get(Key::RepoName), Some(("repo_name", "octo/cat")));
        assert_eq!(file.get(Key::Carryforward), Some(("carryforward", "12")));
        for empty in ["", "---\n", "# nothing\n", "~\n"] {
            assert_eq!(
                parsed(empty).unwrap().get(Key::RepoToken),
                None,
                "{empty:?}"
            );
        }
    }

    #[test]
    fn a_malformed_file_names_itself_and_where_but_not_its_text() {
        for (text, why) in [
            ("repo_token: [unclosed\n", "line"),
            ("- a list\n", "its top is not a mapping"),
            (
                "repo_token:\n  - sekret-1\n",
                "repo_token (line 2) is a list or a mapping",
            ),
            ("repo_token: sekret-1\n\tbad: x\n", "found a tab at line"),
        ] {
            let err = parsed(text).err().expect("an error");
            assert!(err.contains("c.yml is not the YAML"), "{err}");
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(!err.contains("sekret"), "{err}");
        }
    }

    #[test]
    fn a_missing_file_is_nothing_unless_it_was_named() {
        let missing = "/nonexistent/.coveralls.yml";
        assert_eq!(read(missing, false).unwrap().get(Key::RepoToken), None);
        let err = read(missing, true).err().unwrap().to_string();
        assert!(
            err.starts_with("/nonexistent/.coveralls.yml cannot be read"),
            "{err}"
        );
    }
}
