//! The environment the tool reads, captured once, so that tests can hand in their own.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use crate::error::Error;

/// A snapshot of environment variables.
///
/// An empty value counts as unset: GitHub Actions passes omitted inputs as empty strings.
/// Entries that are not valid UTF-8 are kept aside rather than crashing anything; reading
/// one of them by name is a configuration error that names the variable.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: BTreeMap<String, String>,
    not_unicode: BTreeSet<String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env::from_os(std::env::vars_os())
    }

    pub fn from_os(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Env {
        let mut env = Env::default();
        for (name, value) in vars {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => env.insert(name, value),
                (Ok(name), Err(_)) => {
                    env.not_unicode.insert(name);
                }
                // A name that is not UTF-8 cannot be one we look up.
                (Err(_), _) => {}
            }
        }
        env
    }

    pub fn from_pairs<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        let mut env = Env::default();
        for (name, value) in vars {
            env.insert(name.to_owned(), value.to_owned());
        }
        env
    }

    fn insert(&mut self, name: String, value: String) {
        if !value.is_empty() {
            self.vars.insert(name, value);
        }
    }

    /// The value of `name`, or `None` when unset or empty.
    pub fn get(&self, name: &str) -> Result<Option<&str>, Error> {
        if self.not_unicode.contains(name) {
            return Err(Error::config(format!(
                "{name} is not valid UTF-8; expected a text value"
            )));
        }
        Ok(self.vars.get(name).map(String::as_str))
    }

    /// The first of `names` that holds more than blanks, trimmed.
    pub fn first_text(&self, names: &[&str]) -> Result<Option<String>, Error> {
        for name in names {
            if let Some(value) = self.get(name)?.map(str::trim).filter(|v| !v.is_empty()) {
                return Ok(Some(value.to_owned()));
            }
        }
        Ok(None)
    }

    /// Whether `name` holds a value, readable or not.
    pub fn is_set(&self, name: &str) -> bool {
        self.vars.contains_key(name) || self.not_unicode.contains(name)
    }

    /// The readable variables, for deserialising with `envy`.
    pub fn pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.vars.iter().map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Every unreadable variable whose name starts with `prefix`, first one first.
    pub fn check_unicode(&self, prefix: &str) -> Result<(), Error> {
        match self
            .not_unicode
            .iter()
            .find(|name| name.starts_with(prefix))
        {
            Some(name) => self.get(name).map(drop),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_kept_aside_and_named_when_read() {
        use std::os::unix::ffi::OsStringExt;
        let env = Env::from_os([
            (OsString::from("GOOD"), OsString::from("yes")),
            (OsString::from("BAD"), OsString::from_vec(vec![0xff, 0xfe])),
            (OsString::from_vec(vec![0xff]), OsString::from("x")),
        ]);
        assert_eq!(env.get("GOOD").unwrap(), Some("yes"));
        let err = env.get("BAD").unwrap_err().to_string();
        assert!(err.contains("BAD is not valid UTF-8"), "{err}");
        assert!(env.is_set("BAD"));
    }

    #[test]
    fn the_first_text_skips_blanks_and_trims() {
        let env = Env::from_pairs([("A", "  "), ("B", " b "), ("C", "c")]);
        assert_eq!(
            env.first_text(&["Z", "A", "B", "C"]).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(env.first_text(&["Z", "A"]).unwrap(), None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("EMPTY", ""), ("FULL", "1")]);
        assert_eq!(env.get("EMPTY").unwrap(), None);
        assert!(!env.is_set("EMPTY"));
        assert_eq!(env.get("FULL").unwrap(), Some("1"));
    }
}
