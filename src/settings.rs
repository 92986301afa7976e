//! Every setting, written once: its flag, its variables, its default, its help and the action
//! input that sets it. Parsing the command line, `--help`, reading the `COVERALLS_*` variables
//! and the checks of README.md and action.yml all come from [`SETTINGS`].

use std::collections::BTreeMap;
use std::ffi::OsString;

use lexopt::prelude::*;

use crate::env::Env;
use crate::error::Error;

/// A command of the program: the closer (no subcommand word) or a subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Close,
    Serve,
    Deliveries,
    Healthcheck,
}

/// One row of [`COMMANDS`]: how a command is selected, and the first and last lines of its
/// `--help`, around the flags that its settings give it.
pub struct CommandDef {
    pub cmd: Cmd,
    /// The first argument that selects it; `None` for the closer, which needs none.
    pub word: Option<&'static str>,
    /// What its operands are, for a command that takes any (after its word).
    pub operands: Option<&'static str>,
    pub about: &'static str,
    pub usage: &'static str,
    pub notes: &'static str,
}

/// Every command; a new subcommand is a row here, a variant of [`Cmd`] and, for each of its
/// settings, the command in that setting's `commands`.
pub const COMMANDS: &[CommandDef] = &[
    CommandDef {
        cmd: Cmd::Close,
        word: None,
        operands: None,
        about: "Close a Coveralls parallel build once every parallel job has uploaded.",
        usage: "Usage: coveralls-finish [OPTIONS]\n\
                \x20      coveralls-finish serve [OPTIONS]   (the receiver: serve --help)\n\n\
                Every flag overrides its variable; an empty variable counts as unset.",
        notes: "The repo token is read from COVERALLS_REPO_TOKEN only (a Coveralls repo token, or a\n\
                GitHub Actions GITHUB_TOKEN): never from a flag, where process listings would show it.\n\n\
                Exit codes: 0 closed (or a failure softened by COVERALLS_FAIL_ON_ERROR=false),\n\
                1 the close failed, 2 configuration error, 3 a check asked for failed\n\
                (--expected-jobs, --fail-under; never softened).\n",
    },
    CommandDef {
        cmd: Cmd::Serve,
        word: Some("serve"),
        operands: None,
        about: "Receive CircleCI webhooks and Magnum CI hooks; close the matching Coveralls build.",
        usage: "Usage: coveralls-finish serve [OPTIONS]",
        // The receiver adds its sources' variables and routes (`serve::help`).
        notes: "",
    },
    CommandDef {
        cmd: Cmd::Deliveries,
        word: Some("deliveries"),
        operands: Some("[list | retry ID... | retry --failed | drop ID...]"),
        about: "List the receiver's deliveries that are not closed; queue them again, or drop them.",
        usage: "Usage: coveralls-finish deliveries [OPTIONS] [list]\n\
                \x20      coveralls-finish deliveries [OPTIONS] retry ID... | retry --failed\n\
                \x20      coveralls-finish deliveries [OPTIONS] drop ID...",
        notes: "It reads and writes the state file, not the receiver's port: it works while the\n\
                receiver runs. `retry` makes one attempt due now; a retried close that fails again\n\
                is failed again.\n",
    },
    CommandDef {
        cmd: Cmd::Healthcheck,
        word: Some("healthcheck"),
        operands: Some("[URL]"),
        about: "Ask a running receiver whether it is healthy: exit 0 if its /healthz answers 200.",
        usage: "Usage: coveralls-finish healthcheck [OPTIONS] [URL]",
        notes: "URL defaults to /healthz at the address the receiver listens on (--listen), on\n\
                loopback where it listens on every address: a container's HEALTHCHECK needs no\n\
                shell or curl. Exit 1 when it does not answer 200 within 5 seconds.\n",
    },
];

impl Cmd {
    pub fn def(self) -> &'static CommandDef {
        COMMANDS
            .iter()
            .find(|def| def.cmd == self)
            .expect("every command has a row")
    }
}

/// What a flag takes: a value, or a boolean (`--dry-run` alone means true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    Value(&'static str),
    Bool,
}

/// What applies when a setting is given neither as a flag nor as a variable.
#[derive(Clone, Copy, Debug)]
pub enum Default {
    /// This value, read exactly like a given one.
    Value(&'static str),
    /// No value; the text says what happens instead.
    None(&'static str),
}

#[derive(Debug)]
pub struct Setting {
    pub key: Key,
    /// The commands that take it, as a flag and through its variables.
    pub commands: &'static [Cmd],
    /// `None` for the token, which a command line (and so a process listing) must never carry.
    pub flag: Option<&'static str>,
    pub takes: Takes,
    /// The variable, then its aliases; the first one set wins.
    pub vars: &'static [&'static str],
    pub default: Default,
    /// The GitHub Action's input that sets the first variable.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the action.yml check"))]
    pub input: Option<&'static str>,
    pub help: &'static str,
}

/// Declares the settings once: the [`Key`] enum and [`SETTINGS`]. A variable is written
/// without its `COVERALLS_` prefix, in small letters (`service_number` is
/// `COVERALLS_SERVICE_NUMBER`).
macro_rules! settings {
    ($($key:ident {
        commands: [$($cmd:ident),+],
        flag: $flag:expr,
        takes: $takes:expr,
        vars: [$($var:ident),*],
        default: $default:expr,
        input: $input:expr,
        help: $help:expr $(,)?
    })*) => {
        /// A setting, named by type rather than by string.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Key { $($key),* }

        pub const SETTINGS: &[Setting] = &[$(Setting {
            key: Key::$key,
            commands: &[$(Cmd::$cmd),+],
            flag: $flag,
            takes: $takes,
            vars: &[$(var_name!($var)),*],
            default: $default,
            input: $input,
            help: $help,
        }),*];
    };
}

/// The variable a setting names, worked out at compile time: `COVERALLS_` and the name in
/// capitals.
macro_rules! var_name {
    ($field:ident) => {{
        const LOWER: &str = concat!("COVERALLS_", stringify!($field));
        const UPPER: [u8; LOWER.len()] = capitals(LOWER);
        match std::str::from_utf8(&UPPER) {
            Ok(name) => name,
            Err(_) => panic!("a variable name is ASCII"),
        }
    }};
}

const fn capitals<const N: usize>(name: &str) -> [u8; N] {
    let mut upper = [0; N];
    let mut i = 0;
    while i < N {
        upper[i] = name.as_bytes()[i].to_ascii_uppercase();
        i += 1;
    }
    upper
}

settings! {
    RepoToken {
        commands: [Close, Serve],
        flag: None,
        takes: Takes::Value("TOKEN"),
        vars: [repo_token],
        default: Default::None("required, except for a dry run"),
        input: Some("github-token"),
        help: "the Coveralls repo token, or a GitHub Actions `GITHUB_TOKEN`",
    }
    Endpoint {
        commands: [Close, Serve],
        flag: Some("--endpoint"),
        takes: Takes::Value("URL"),
        vars: [endpoint],
        default: Default::Value("https://coveralls.io"),
        input: Some("coveralls-endpoint"),
        help: "base URL, for Coveralls Enterprise; a trailing `/` is fine",
    }
    Carryforward {
        commands: [Close, Serve],
        flag: Some("--carryforward"),
        takes: Takes::Value("FLAGS"),
        vars: [carryforward_flags, carryforward],
        default: Default::None("none"),
        input: Some("carryforward"),
        help: "flag names to carry forward, separated by commas and/or newlines; blanks trimmed, \
               empties and repeats dropped",
    }
    BuildNumber {
        commands: [Close],
        flag: Some("--build-number"),
        takes: Takes::Value("N"),
        vars: [service_number],
        default: Default::None("detected from the CI"),
        input: Some("build-number"),
        help: "the build number the parallel uploads used, overriding detection",
    }
    ServiceName {
        commands: [Close],
        flag: Some("--service-name"),
        takes: Takes::Value("NAME"),
        vars: [service_name],
        default: Default::None("detected from the CI"),
        input: None,
        help: "`service_name` sent to Coveralls",
    }
    RepoName {
        commands: [Close],
        flag: Some("--repo-name"),
        takes: Takes::Value("OWNER/REPO"),
        vars: [repo_name],
        default: Default::None("`GITHUB_REPOSITORY` on GitHub"),
        input: Some("repo-name"),
        help: "`repo_name` sent to Coveralls (needed with a `GITHUB_TOKEN`)",
    }
    Commit {
        commands: [Close],
        flag: Some("--commit"),
        takes: Takes::Value("SHA"),
        vars: [git_commit],
        default: Default::None("detected from the CI"),
        input: Some("git-commit"),
        help: "the commit sent as `commit_sha` and `git.head.id`",
    }
    Branch {
        commands: [Close],
        flag: Some("--branch"),
        takes: Takes::Value("NAME"),
        vars: [git_branch],
        default: Default::None("detected from the CI"),
        input: Some("git-branch"),
        help: "the branch sent as `service_branch` and `git.branch`",
    }
    PullRequest {
        commands: [Close],
        flag: Some("--pull-request"),
        takes: Takes::Value("N"),
        vars: [pull_request],
        default: Default::None("detected from the CI"),
        input: Some("pull-request"),
        help: "the pull request's number, sent as `service_pull_request`",
    }
    JobId {
        commands: [Close],
        flag: Some("--job-id"),
        takes: Takes::Value("ID"),
        vars: [service_job_id],
        default: Default::None("detected from the CI"),
        input: Some("job-id"),
        help: "the job sent as `service_job_id`",
    }
    JobNumber {
        commands: [Close],
        flag: Some("--job-number"),
        takes: Takes::Value("N"),
        vars: [service_job_number],
        default: Default::None("detected from the CI"),
        input: None,
        help: "the job's number, sent as `service_job_number`",
    }
    EventType {
        commands: [Close],
        flag: Some("--event-type"),
        takes: Takes::Value("TYPE"),
        vars: [event_type],
        default: Default::None("`manual` with `COVERALLS_RUN_LOCALLY`, else none"),
        input: None,
        help: "what started the build, sent as `service_event_type`",
    }
    ConfigPath {
        commands: [Close],
        flag: Some("--config-path"),
        takes: Takes::Value("FILE"),
        vars: [],
        default: Default::Value(".coveralls.yml"),
        input: None,
        help: "coverage-reporter's YAML settings: its `repo_token` (or `repo_secret_token`), \
               `service_name`, `repo_name`, `endpoint` and `carryforward`, each under the \
               environment; a missing file is no error unless named here",
    }
    RequireToken {
        commands: [Close],
        flag: Some("--require-token"),
        takes: Takes::Bool,
        vars: [require_token],
        default: Default::Value("false"),
        input: Some("require-token"),
        help: "`true`: a pull request from a fork or Dependabot, with no token, fails rather \
               than being skipped with a notice",
    }
    ExpectedJobs {
        commands: [Close],
        flag: Some("--expected-jobs"),
        takes: Takes::Value("N"),
        vars: [expected_jobs],
        default: Default::None("no check"),
        input: Some("expected-jobs"),
        help: "fail (exit 3) when the closed build has fewer jobs than this",
    }
    Wait {
        commands: [Close],
        flag: Some("--wait"),
        takes: Takes::Value("SECS"),
        vars: [wait],
        default: Default::Value("0"),
        input: Some("wait"),
        help: "seconds to wait, after the close, for the build's coverage (at most 600; 0: do \
               not wait; 120 with `--fail-under`)",
    }
    FailUnder {
        commands: [Close],
        flag: Some("--fail-under"),
        takes: Takes::Value("PERCENT"),
        vars: [fail_under],
        default: Default::None("no check"),
        input: Some("fail-under"),
        help: "fail (exit 3) when the build's coverage is below this percentage",
    }
    FailOnError {
        commands: [Close],
        flag: Some("--fail-on-error"),
        takes: Takes::Bool,
        vars: [fail_on_error],
        default: Default::Value("true"),
        input: Some("fail-on-error"),
        help: "`false`: any failure, configuration included, becomes a warning and exit 0",
    }
    DryRun {
        commands: [Close],
        flag: Some("--dry-run"),
        takes: Takes::Bool,
        vars: [dry_run],
        default: Default::Value("false"),
        input: Some("dry-run"),
        help: "print the request that would be sent (token redacted); send nothing",
    }
    Debug {
        commands: [Close, Serve],
        flag: Some("--debug"),
        takes: Takes::Bool,
        vars: [debug],
        default: Default::Value("false"),
        input: Some("debug"),
        help: "verbose diagnostics: settings, each request and answer (also on when \
               `RUNNER_DEBUG=1`)",
    }
    Retries {
        commands: [Close, Serve],
        flag: Some("--retries"),
        takes: Takes::Value("N"),
        vars: [retries],
        default: Default::Value("5"),
        input: Some("retries"),
        help: "retries after the first attempt, 0 to 20",
    }
    Timeout {
        commands: [Close, Serve],
        flag: Some("--timeout"),
        takes: Takes::Value("SECS"),
        vars: [timeout],
        default: Default::Value("20"),
        input: Some("timeout"),
        help: "seconds one attempt may take, from connecting to the last byte; fractions \
               allowed, at most 600",
    }
    Listen {
        commands: [Serve, Healthcheck],
        flag: Some("--listen"),
        takes: Takes::Value("ADDR"),
        vars: [finish_listen],
        default: Default::Value("127.0.0.1:8080"),
        input: None,
        help: "address and port to listen on",
    }
    Config {
        commands: [Serve],
        flag: Some("--config"),
        takes: Takes::Value("FILE"),
        vars: [],
        default: Default::None("one project from the environment"),
        input: None,
        help: "a TOML file of projects",
    }
    State {
        commands: [Serve, Deliveries],
        flag: Some("--state"),
        takes: Takes::Value("FILE"),
        vars: [finish_state],
        default: Default::None(
            "`coveralls-finish.sqlite3` in `$STATE_DIRECTORY` (systemd's), else in the working \
             directory",
        ),
        input: None,
        help: "the receiver's SQLite file: every delivery accepted, and the closes still to make",
    }
    AnswerWait {
        commands: [Serve],
        flag: Some("--answer-wait"),
        takes: Takes::Value("DURATION"),
        vars: [finish_answer_wait],
        default: Default::Value("1s"),
        input: None,
        help: "how long an answer waits for the first attempt to say `closed` before it says \
               `queued`; 0s to 8s",
    }
    RetrySchedule {
        commands: [Serve],
        flag: Some("--retry-schedule"),
        takes: Takes::Value("DURATIONS"),
        vars: [finish_retry_schedule],
        default: Default::Value("5s,30s,2m,10m,30m,1h,2h,4h,8h"),
        input: None,
        help: "the waits after each failed attempt at a close, separated by commas; the last \
               repeats",
    }
    RetryFor {
        commands: [Serve],
        flag: Some("--retry-for"),
        takes: Takes::Value("DURATION"),
        vars: [finish_retry_for],
        default: Default::Value("72h"),
        input: None,
        help: "how long a close that Coveralls keeps failing is tried before it is `failed`",
    }
    KeepClosed {
        commands: [Serve],
        flag: Some("--keep-closed"),
        takes: Takes::Value("DURATION"),
        vars: [finish_keep_closed],
        default: Default::Value("7d"),
        input: None,
        help: "how long a closed delivery is kept, to answer its duplicates",
    }
    Json {
        commands: [Deliveries],
        flag: Some("--json"),
        takes: Takes::Bool,
        vars: [],
        default: Default::Value("false"),
        input: None,
        help: "print the list as JSON",
    }
    Failed {
        commands: [Deliveries],
        flag: Some("--failed"),
        takes: Takes::Bool,
        vars: [],
        default: Default::Value("false"),
        input: None,
        help: "with `retry`: every failed delivery",
    }
}

impl Setting {
    pub fn of(key: Key) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|setting| setting.key == key)
            .expect("the macro gives every key a setting")
    }

    fn taken_by(&self, cmd: Cmd) -> bool {
        self.commands.contains(&cmd)
    }

    /// The flag as `--help` and README show it: `--timeout SECS`, `--dry-run[=BOOL]`.
    pub fn usage(&self) -> Option<String> {
        let flag = self.flag?;
        Some(match self.takes {
            Takes::Value(value) => format!("{flag} {value}"),
            Takes::Bool => format!("{flag}[=BOOL]"),
        })
    }

    pub fn default_text(&self) -> &'static str {
        match self.default {
            Default::Value(text) | Default::None(text) => text,
        }
    }
}

/// What the command line gave: the command, its flag values by key (the last one given
/// wins), and its operands.
#[derive(Debug)]
pub struct Flags {
    pub cmd: Cmd,
    given: Vec<(Key, String)>,
    /// The arguments that are not flags, for a command that takes any.
    pub operands: Vec<String>,
}

impl Flags {
    pub fn new(cmd: Cmd) -> Self {
        Flags {
            cmd,
            given: Vec::new(),
            operands: Vec::new(),
        }
    }

    pub fn get(&self, key: Key) -> Option<&str> {
        self.given
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug)]
pub enum Command {
    Close(Flags),
    Serve(Flags),
    Deliveries(Flags),
    Healthcheck(Flags),
    Help(Cmd),
    Version,
}

/// The command line: the command its first word selects (the closer without one), then
/// the flags that command takes.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, Error> {
    let mut args = args.into_iter().peekable();
    let selected = args.peek().and_then(|first| {
        COMMANDS
            .iter()
            .find(|def| def.word.is_some_and(|word| first == word))
    });
    let cmd = match selected {
        Some(def) => {
            args.next();
            def.cmd
        }
        None => Cmd::Close,
    };
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags = Flags::new(cmd);
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(cmd)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(name) => {
                let flag = format!("--{name}");
                let setting = SETTINGS
                    .iter()
                    .find(|s| s.flag == Some(flag.as_str()) && s.taken_by(cmd))
                    .ok_or_else(|| usage(format!("unknown flag {flag}")))?;
                let value = match setting.takes {
                    Takes::Bool => parser
                        .optional_value()
                        .map_or(Ok("true".to_owned()), text)?,
                    Takes::Value(_) => text(parser.value().map_err(usage)?)?,
                };
                flags.given.push((setting.key, value));
            }
            Value(operand) if cmd.def().operands.is_some() => flags.operands.push(text(operand)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(match cmd {
        Cmd::Serve => Command::Serve(flags),
        Cmd::Deliveries => Command::Deliveries(flags),
        Cmd::Healthcheck => Command::Healthcheck(flags),
        Cmd::Close => Command::Close(flags),
    })
}

fn text(value: OsString) -> Result<String, Error> {
    value
        .into_string()
        .map_err(|_| usage("a flag value is not valid UTF-8"))
}

fn usage(err: impl std::fmt::Display) -> Error {
    Error::config(format!("{err}; see --help"))
}

/// A value and where it came from (a flag, a variable, or the default), named in errors.
pub struct Given<'a> {
    pub value: &'a str,
    pub from: &'static str,
}

/// What every variable of the settings starts with (a test holds them to it).
const PREFIX: &str = "COVERALLS_";

/// The flags and the `COVERALLS_*` variables, looked up by key: the flag first, then each
/// variable in order.
pub struct Values<'a> {
    /// The `COVERALLS_*` variables as `envy` reads them: the prefix dropped, the names in
    /// small letters (`COVERALLS_SERVICE_NUMBER` is `service_number`). A map rather than a
    /// struct of every field: one lookup by name, without a deserializer per field.
    vars: BTreeMap<String, String>,
    flags: &'a Flags,
}

impl<'a> Values<'a> {
    /// Every `COVERALLS_*` variable must be text: one that is not is named now, not when read.
    pub fn read(env: &'a Env, flags: &'a Flags) -> Result<Self, Error> {
        env.check_unicode("COVERALLS_")?;
        let vars = envy::prefixed(PREFIX)
            .from_iter(env.pairs())
            .map_err(|err| Error::config(format!("reading COVERALLS_* variables: {err}")))?;
        Ok(Values { vars, flags })
    }

    /// The value given for `key`, by flag or variable; `None` where neither is set.
    pub fn given(&self, key: Key) -> Option<Given<'_>> {
        let setting = Setting::of(key);
        // A command reads only the settings it takes, which its --help and README list.
        debug_assert!(
            setting.taken_by(self.flags.cmd),
            "{key:?} is not a setting of {:?}",
            self.flags.cmd
        );
        if let (Some(value), Some(flag)) = (self.flags.get(key), setting.flag) {
            return Some(Given { value, from: flag });
        }
        setting.vars.iter().find_map(|&from| {
            let name = from.strip_prefix(PREFIX)?.to_ascii_lowercase();
            let value = self.vars.get(&name)?;
            Some(Given { value, from })
        })
    }

    /// As [`Values::given`], else the default value, if the setting has one.
    pub fn get(&self, key: Key) -> Option<Given<'_>> {
        self.given(key).or(match Setting::of(key).default {
            Default::Value(value) => Some(Given {
                value,
                from: "the default",
            }),
            Default::None(_) => None,
        })
    }
}

/// `--help` for `cmd`, from the tables: its row in [`COMMANDS`], then the flags of the
/// settings it takes.
pub fn help(cmd: Cmd) -> String {
    let def = cmd.def();
    let name = match def.word {
        Some(word) => format!("coveralls-finish {} {word}", crate::VERSION),
        None => format!("coveralls-finish {}", crate::VERSION),
    };
    let mut text = format!("{name}\n{}\n\n{}\n\nOptions:\n", def.about, def.usage);
    for setting in SETTINGS.iter().filter(|s| s.taken_by(cmd)) {
        let Some(usage) = setting.usage() else {
            continue;
        };
        text += &format!("  {usage}\n      {}\n", setting.help.replace('`', ""));
        if !setting.vars.is_empty() {
            text += &format!("      [env: {}]", setting.vars.join(", "));
        }
        text += &format!(" [default: {}]\n", setting.default_text().replace('`', ""));
    }
    text += "  -h, --help\n      print this help\n  -V, --version\n      print the version\n\n";
    text + def.notes
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn values_and_booleans_by_key() {
        let Command::Close(flags) =
            parse_args(&["--build-number", "12", "--dry-run", "--debug=false"]).unwrap()
        else {
            panic!("expected a close");
        };
        assert_eq!(flags.get(Key::BuildNumber), Some("12"));
        assert_eq!(flags.get(Key::DryRun), Some("true"));
        assert_eq!(flags.get(Key::Debug), Some("false"));
        assert_eq!(flags.get(Key::Endpoint), None);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_usage_errors() {
        let err = parse_args(&["--repo-token", "x"]).unwrap_err().to_string();
        assert!(err.contains("unknown flag --repo-token"), "{err}");
        let err = parse_args(&["--timeout"]).unwrap_err().to_string();
        assert!(err.contains("--timeout"), "{err}");
        let err = parse_args(&["stray"]).unwrap_err().to_string();
        assert!(err.contains("unexpected argument"), "{err}");
        assert!(
            err.contains("stray") && err.ends_with("; see --help"),
            "{err}"
        );
    }

    #[test]
    fn every_command_has_one_row_and_a_word_of_its_own() {
        for cmd in [Cmd::Close, Cmd::Serve, Cmd::Deliveries, Cmd::Healthcheck] {
            assert_eq!(COMMANDS.iter().filter(|def| def.cmd == cmd).count(), 1);
            assert_eq!(cmd.def().cmd, cmd);
        }
        let words: Vec<_> = COMMANDS.iter().map(|def| def.word).collect();
        let unique: HashSet<_> = words.iter().collect();
        assert_eq!(unique.len(), words.len(), "{words:?}");
        assert_eq!(
            COMMANDS.iter().filter(|def| def.word.is_none()).count(),
            1,
            "exactly one command runs without a word"
        );
    }

    #[test]
    fn every_setting_belongs_to_a_command_and_its_flag_and_variables_are_its_own() {
        let mut vars = HashSet::new();
        for setting in SETTINGS {
            assert!(!setting.commands.is_empty(), "{:?}", setting.key);
            for var in setting.vars {
                assert!(
                    var.starts_with(PREFIX),
                    "{var}: Values reads {PREFIX}* alone"
                );
                assert!(vars.insert(*var), "{var} belongs to two settings");
            }
            assert!(!setting.help.is_empty(), "{:?}", setting.key);
        }
        for def in COMMANDS {
            let flags: Vec<_> = SETTINGS
                .iter()
                .filter(|s| s.taken_by(def.cmd))
                .filter_map(|s| s.flag)
                .collect();
            let unique: HashSet<_> = flags.iter().collect();
            assert_eq!(unique.len(), flags.len(), "{:?}: {flags:?}", def.cmd);
            assert!(!flags.contains(&"--help") && !flags.contains(&"--version"));
        }
        let token = Setting::of(Key::RepoToken);
        assert_eq!(
            token.flag, None,
            "a token on a command line shows in process listings"
        );
    }

    #[test]
    fn serve_is_a_subcommand_with_its_own_flags() {
        let Command::Serve(flags) =
            parse_args(&["serve", "--listen", "0.0.0.0:9", "--config", "p.toml"]).unwrap()
        else {
            panic!("expected serve");
        };
        assert_eq!(flags.get(Key::Listen), Some("0.0.0.0:9"));
        assert_eq!(flags.get(Key::Config), Some("p.toml"));
        let err = parse_args(&["serve", "--build-number", "1"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag --build-number; see --help");
        let err = parse_args(&["--listen", "x"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag --listen; see --help");
        assert!(matches!(
            parse_args(&["serve", "-h"]),
            Ok(Command::Help(Cmd::Serve))
        ));
    }

    #[test]
    fn a_flag_beats_its_variables_which_beat_the_default() {
        let env = Env::from_pairs([
            ("COVERALLS_CARRYFORWARD", "alias"),
            ("COVERALLS_RETRIES", "3"),
        ]);
        let Command::Close(flags) = parse_args(&["--timeout", "9"]).unwrap() else {
            panic!("expected a close");
        };
        let sources = Values::read(&env, &flags).unwrap();
        let from = |key| sources.get(key).map(|g| (g.value, g.from));
        assert_eq!(
            from(Key::Carryforward),
            Some(("alias", "COVERALLS_CARRYFORWARD"))
        );
        assert_eq!(from(Key::Retries), Some(("3", "COVERALLS_RETRIES")));
        assert_eq!(from(Key::Timeout), Some(("9", "--timeout")));
        assert_eq!(
            from(Key::Endpoint),
            Some(("https://coveralls.io", "the default"))
        );
        assert_eq!(from(Key::BuildNumber), None);
    }

    #[test]
    fn help_lists_every_flag_with_its_variables_and_default() {
        for def in COMMANDS {
            let help = help(def.cmd);
            for setting in SETTINGS.iter().filter(|s| s.taken_by(def.cmd)) {
                let Some(usage) = setting.usage() else {
                    continue;
                };
                let default = setting.default_text().replace('`', "");
                assert!(help.contains(&usage), "{usage}");
                assert!(help.contains(&format!("[default: {default}]")), "{usage}");
                for var in setting.vars {
                    assert!(help.contains(var), "{var}");
                }
            }
        }
    }

    /// README's table row for a setting, as the table says it must read.
    fn readme_row(setting: &Setting) -> String {
        let mut vars = match setting.vars.first() {
            Some(var) => format!("`{var}`"),
            None => "(none)".to_owned(),
        };
        if setting.vars.len() > 1 {
            let aliases: Vec<String> = setting.vars[1..].iter().map(|v| format!("`{v}`")).collect();
            vars += &format!(" (alias {})", aliases.join(", "));
        }
        let flag = setting
            .usage()
            .map_or_else(|| "(none)".to_owned(), |usage| format!("`{usage}`"));
        let default = match setting.default {
            Default::Value(value) => format!("`{value}`"),
            Default::None(text) => text.to_owned(),
        };
        format!("| {vars} | {flag} | {} | {default} |", setting.help)
    }

    #[test]
    fn readme_and_action_yml_agree_with_the_table() {
        let root = env!("CARGO_MANIFEST_DIR");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let action = std::fs::read_to_string(format!("{root}/action.yml")).unwrap();
        let lines: Vec<&str> = readme.lines().collect();
        let mut missing = Vec::new();
        for setting in SETTINGS {
            let row = readme_row(setting);
            if !lines.contains(&row.as_str()) {
                missing.push(row);
            }
            let Some(input) = setting.input else {
                continue;
            };
            let var = setting.vars[0];
            let mapped = format!("{var}: ${{{{ inputs.{input} }}}}");
            assert!(action.contains(&mapped), "action.yml lacks `{mapped}`");
            assert!(
                action.contains(&format!("\n  {input}:\n")),
                "action.yml does not declare the input {input}"
            );
            let prefix = format!("| `{input}` | `{var}` |");
            assert!(
                lines.iter().any(|line| line.starts_with(&prefix)),
                "README's action inputs lack a row {prefix}"
            );
        }
        assert!(
            missing.is_empty(),
            "README.md lacks these rows, as the settings table has them:\n{}",
            missing.join("\n")
        );
    }
}
