//! The built binary, run with exactly the environment a test gives it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The built binary with a cleared environment. Only `SYSTEMROOT` is kept: Windows needs it
/// to start a process and to open sockets.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coveralls-finish"));
    command.env_clear();
    for keep in ["SYSTEMROOT", "SystemRoot"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    command
}

/// Variables for one case of a table-driven test.
pub type Vars<'a> = &'a [(&'a str, &'a str)];

pub const TOKEN: &str = "tok-9DhgwUv9YiJjkm6PP4c6DxBgeUiXObJjK";

/// The closer, run with exactly the environment given (nothing inherited).
#[derive(Default)]
pub struct Finish {
    env: Vec<(String, String)>,
    args: Vec<String>,
    github: Option<tempfile::TempDir>,
    dir: Option<std::path::PathBuf>,
}

pub fn finish() -> Finish {
    Finish::default()
}

impl Finish {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (name, value) in vars {
            self = self.env(name, value);
        }
        self
    }

    /// The usual: a token, a build number, the server as endpoint.
    pub fn against(self, server: &super::Server) -> Self {
        self.env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_ENDPOINT", &server.url())
            .env("COVERALLS_SERVICE_NUMBER", "42")
    }

    /// Run in this directory (by default the crate's, a git work tree).
    pub fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Run as a GitHub Actions step, with output and summary files.
    pub fn github(mut self) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let summary = dir.path().join("summary");
        self.github = Some(dir);
        self.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", output.to_str().unwrap())
            .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
    }

    pub fn run(self) -> Outcome {
        let mut command = binary();
        command.args(&self.args);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let started = Instant::now();
        let output = command.output().unwrap();
        let read = |name: &str| {
            let dir = self.github.as_ref()?;
            std::fs::read_to_string(dir.path().join(name)).ok()
        };
        let outcome = Outcome {
            code: output.status.code().expect("exited"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            outputs: read("output"),
            summary: read("summary"),
            elapsed: started.elapsed(),
        };
        let token = self.env.iter().find(|(n, _)| n == "COVERALLS_REPO_TOKEN");
        if let Some((_, token)) = token {
            outcome.assert_no_secret(token);
        }
        outcome
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Option<String>,
    pub summary: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The secret appears nowhere but in the one `::add-mask::` line GitHub needs to hide it.
    pub fn assert_no_secret(&self, secret: &str) {
        let mask = format!("::add-mask::{secret}");
        for line in self.stdout.lines().chain(self.stderr.lines()) {
            assert!(
                line == mask || !line.contains(secret),
                "secret printed: {line:?}\n{self:#?}"
            );
        }
        for file in [&self.outputs, &self.summary].into_iter().flatten() {
            assert!(!file.contains(secret), "secret written: {file}");
        }
    }

    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Parsed `name<<DELIMITER` blocks of `$GITHUB_OUTPUT`.
    pub fn step_outputs(&self) -> BTreeMap<String, String> {
        let text = self.outputs.as_deref().expect("GITHUB_OUTPUT was written");
        let mut outputs = BTreeMap::new();
        let mut lines = text.lines();
        while let Some(head) = lines.next() {
            let (name, delimiter) = head.split_once("<<").expect("multi-line form");
            let mut value = Vec::new();
            for line in lines.by_ref() {
                if line == delimiter {
                    break;
                }
                value.push(line);
            }
            outputs.insert(name.to_owned(), value.join("\n"));
        }
        outputs
    }
}
