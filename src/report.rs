//! Everything the user sees: log lines, results, and on GitHub Actions the workflow commands,
//! step outputs and step summary. Every line passes through here so that a secret is
//! redacted wherever it would appear, whatever text (the server's included) carries it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "serve")]
use aho_corasick::AhoCorasick;
use anyhow::Context;

use crate::env::Env;

pub struct Reporter<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    github: Option<GitHub>,
    secrets: Arc<Redactor>,
    pub debug: bool,
    /// Put before every line: the receiver names the delivery a line belongs to.
    pub prefix: String,
}

/// Where a GitHub Actions step writes its outputs and summary.
struct GitHub {
    output: Option<PathBuf>,
    summary: Option<PathBuf>,
}

impl<'a> Reporter<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, env: &Env) -> Self {
        let path = |name| env.get(name).ok().flatten().map(PathBuf::from);
        let github = (env.get("GITHUB_ACTIONS").ok().flatten() == Some("true")).then(|| GitHub {
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
        });
        Reporter {
            out,
            err,
            github,
            secrets: Arc::new(Redactor::default()),
            debug: false,
            prefix: String::new(),
        }
    }

    /// Redact these secrets, built once and shared (the receiver's, for every delivery).
    #[cfg(feature = "serve")]
    pub fn with_secrets(mut self, secrets: Arc<Redactor>) -> Self {
        self.secrets = secrets;
        self
    }

    /// As [`Reporter::mask`] for each of `secrets` at once: the automaton is built once.
    #[cfg(feature = "serve")]
    pub fn mask_all(&mut self, secrets: Arc<Redactor>) {
        if self.on_github() {
            for secret in &secrets.secrets {
                let _ = writeln!(self.out, "::add-mask::{}", escape_data(secret));
            }
        }
        self.secrets = secrets;
    }

    pub fn on_github(&self) -> bool {
        self.github.is_some()
    }

    /// Redact `secret` from everything from now on; on GitHub also ask the runner to mask it.
    pub fn mask(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        if self.on_github() {
            // The one line that carries the secret: the runner masks it from then on.
            let _ = writeln!(self.out, "::add-mask::{}", escape_data(secret));
        }
        let mut secrets = self.secrets.secrets.clone();
        secrets.push(secret.to_owned());
        self.secrets = Arc::new(Redactor::new(secrets));
    }

    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    fn write(&mut self, to_err: bool, text: &str) {
        let text = self.redact(&format!("{}{text}", self.prefix));
        let stream: &mut dyn Write = if to_err && !self.on_github() {
            &mut *self.err
        } else {
            // On GitHub one stream keeps workflow commands and log lines in order.
            &mut *self.out
        };
        // One write a line: one system call, and never half a line beside another's.
        let _ = stream.write_all(format!("{text}\n").as_bytes());
    }

    /// The result: standard output.
    pub fn result(&mut self, text: &str) {
        self.write(false, text);
    }

    /// Progress: standard error, so that standard output holds only the result.
    pub fn log(&mut self, text: &str) {
        self.write(true, text);
    }

    /// Diagnostics, shown only in debug mode; grouped on GitHub.
    pub fn debug_block(&mut self, title: &str, lines: &[&str]) {
        if !self.debug {
            return;
        }
        if self.on_github() {
            self.write(false, &format!("::group::{}", escape_data(title)));
            for line in lines.iter().flat_map(|l| l.lines()) {
                // Server text must not be read as a workflow command.
                let line = if line.trim_start().starts_with("::") {
                    format!(" {line}")
                } else {
                    line.to_owned()
                };
                self.write(false, &line);
            }
            self.write(false, "::endgroup::");
        } else {
            self.write(true, &format!("debug: {title}"));
            for line in lines.iter().flat_map(|l| l.lines()) {
                self.write(true, &format!("debug:   {line}"));
            }
        }
    }

    pub fn notice(&mut self, text: &str) {
        self.annotate("notice", text);
    }

    pub fn warning(&mut self, text: &str) {
        self.annotate("warning", text);
    }

    pub fn error(&mut self, text: &str) {
        self.annotate("error", text);
    }

    fn annotate(&mut self, level: &str, text: &str) {
        if self.on_github() {
            let title = escape_property("coveralls-finish");
            self.write(
                false,
                &format!("::{level} title={title}::{}", escape_data(text)),
            );
        } else {
            for (i, line) in text.lines().enumerate() {
                let prefix = if i == 0 {
                    format!("{level}: ")
                } else {
                    "  ".to_owned()
                };
                self.write(true, &format!("{prefix}{line}"));
            }
        }
    }

    /// Step outputs, in the multi-line form with a delimiter that the value cannot contain.
    pub fn outputs(&mut self, outputs: &[(&str, &str)]) -> anyhow::Result<()> {
        let Some(path) = self.github.as_ref().and_then(|gh| gh.output.clone()) else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, value) in outputs {
            let value = self.redact(value);
            let delimiter = loop {
                let candidate = format!("ghadelimiter_{:016x}", crate::random::u64());
                if !value.contains(&candidate) {
                    break candidate;
                }
            };
            text += &format!("{name}<<{delimiter}\n{value}\n{delimiter}\n");
        }
        append(&path, &text).context("writing step outputs to GITHUB_OUTPUT")
    }

    /// Markdown for the step summary.
    pub fn summary(&mut self, markdown: &str) -> anyhow::Result<()> {
        let Some(path) = self.github.as_ref().and_then(|gh| gh.summary.clone()) else {
            return Ok(());
        };
        let markdown = self.redact(markdown);
        append(&path, &markdown).context("writing the step summary to GITHUB_STEP_SUMMARY")
    }
}

/// Every secret to redact. The receiver's are in one automaton, so that a line costs the
/// same however many there are (it has one a project); the closer, with a secret or two,
/// looks for each in turn. Where secrets overlap in a text, all of both goes, so no part of
/// either is left beside the other's `***`.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<String>,
    #[cfg(feature = "serve")]
    automaton: Option<AhoCorasick>,
}

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Redactor {
        let secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        Redactor {
            // Only an automaton past aho-corasick's own limits fails to build: billions of
            // states.
            #[cfg(feature = "serve")]
            automaton: (!secrets.is_empty())
                .then(|| AhoCorasick::new(&secrets).expect("the secrets fit in one automaton")),
            secrets,
        }
    }

    /// `text` with every stretch that is part of a secret replaced by one `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut matches = self.matches(text);
        if matches.is_empty() {
            return text.to_owned();
        }
        matches.sort_unstable();
        let mut matches = matches.into_iter().peekable();
        let mut redacted = String::with_capacity(text.len());
        let mut written = 0;
        while let Some((start, mut end)) = matches.next() {
            // Overlapping matches make one stretch.
            while let Some((_, next_end)) = matches.next_if(|(next, _)| *next < end) {
                end = end.max(next_end);
            }
            redacted.push_str(&text[written..start]);
            redacted.push_str("***");
            written = end;
        }
        redacted.push_str(&text[written..]);
        redacted
    }

    /// Where each secret is in `text`, overlapping ones too: start and end.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        #[cfg(feature = "serve")]
        if let Some(automaton) = &self.automaton {
            let found = automaton.find_overlapping_iter(text);
            return found.map(|m| (m.start(), m.end())).collect();
        }
        let found = self.secrets.iter().flat_map(|secret| {
            let at = text.match_indices(secret.as_str());
            at.map(|(start, secret)| (start, start + secret.len()))
        });
        found.collect()
    }
}

fn append(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Workflow command data: `%`, CR and LF escaped, so text cannot end the command early.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Workflow command properties: as data, and `:` and `,` too.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// A value safe inside a Markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("50%\r\n::x"), "50%25%0D%0A::x");
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }

    #[test]
    fn secrets_are_redacted_from_every_line() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = Env::from_pairs([]);
        let mut ui = Reporter::new(&mut out, &mut err, &env);
        ui.mask("tok-123");
        ui.error("server said tok-123 is bad");
        ui.result("tok-123");
        drop(ui);
        let all = String::from_utf8(out).unwrap() + &String::from_utf8(err).unwrap();
        assert!(!all.contains("tok-123"), "{all}");
        assert!(all.contains("error: server said *** is bad"), "{all}");
    }

    #[test]
    fn overlapping_secrets_leave_no_part_of_either() {
        let redactor = Redactor::new(vec![
            "12345678".into(),
            "x12345678y".into(),
            "abcdefgh".into(),
            "defghijk".into(),
        ]);
        assert_eq!(redactor.redact("a x12345678y b"), "a *** b");
        assert_eq!(redactor.redact("12345678 and abcdefghijk"), "*** and ***");
        assert_eq!(redactor.redact("abcdefgh12345678"), "******");
        assert_eq!(redactor.redact("no secret here"), "no secret here");
        assert_eq!(Redactor::new(vec![String::new()]).redact("text"), "text");
    }
}
