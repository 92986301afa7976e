//! The command line: flags that override the `COVERALLS_*` variables.

use std::ffi::OsString;

use lexopt::prelude::*;

use crate::Error;

/// One flag, the variable it overrides, and its default: the source of `--help`.
#[derive(Debug)]
pub struct Opt {
    pub flag: &'static str,
    pub value: &'static str,
    pub var: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

pub const OPTIONS: &[Opt] = &[
    Opt {
        flag: "--build-number",
        value: "N",
        var: "COVERALLS_SERVICE_NUMBER",
        default: "detected from the CI",
        help: "build number the parallel uploads used (alias COVERALLS_BUILD_NUMBER)",
    },
    Opt {
        flag: "--carryforward",
        value: "FLAGS",
        var: "COVERALLS_CARRYFORWARD_FLAGS",
        default: "none",
        help: "flag names, comma or newline separated (alias COVERALLS_CARRYFORWARD)",
    },
    Opt {
        flag: "--endpoint",
        value: "URL",
        var: "COVERALLS_ENDPOINT",
        default: "https://coveralls.io",
        help: "Coveralls base URL (Coveralls Enterprise)",
    },
    Opt {
        flag: "--service-name",
        value: "NAME",
        var: "COVERALLS_SERVICE_NAME",
        default: "detected",
        help: "service_name sent to Coveralls",
    },
    Opt {
        flag: "--repo-name",
        value: "OWNER/REPO",
        var: "COVERALLS_REPO_NAME",
        default: "GITHUB_REPOSITORY on GitHub",
        help: "repository, needed when the token is a GITHUB_TOKEN",
    },
    Opt {
        flag: "--fail-on-error",
        value: "[=BOOL]",
        var: "COVERALLS_FAIL_ON_ERROR",
        default: "true",
        help: "false: any failure becomes a warning and exit 0",
    },
    Opt {
        flag: "--dry-run",
        value: "[=BOOL]",
        var: "COVERALLS_DRY_RUN",
        default: "false",
        help: "print the request (token redacted), send nothing",
    },
    Opt {
        flag: "--debug",
        value: "[=BOOL]",
        var: "COVERALLS_DEBUG",
        default: "false",
        help: "verbose diagnostics (also on with RUNNER_DEBUG=1)",
    },
    Opt {
        flag: "--retries",
        value: "N",
        var: "COVERALLS_RETRIES",
        default: "5",
        help: "retries after the first attempt, 0 to 20",
    },
    Opt {
        flag: "--timeout",
        value: "SECS",
        var: "COVERALLS_TIMEOUT",
        default: "20",
        help: "seconds one attempt may take, connect to last byte",
    },
];

/// Flag values as given; `None` where the flag was absent.
#[derive(Debug, Default)]
pub struct Flags {
    values: Vec<(&'static Opt, String)>,
}

impl Flags {
    /// The value given for `flag`, with the flag's name for error messages.
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(opt, _)| opt.flag == flag)
            .map(|(_, value)| value.as_str())
    }
}

/// `coveralls-finish serve`: where to listen, and the projects file.
#[derive(Debug, Default)]
pub struct ServeFlags {
    pub listen: Option<String>,
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub enum Command {
    Close(Flags),
    Serve(ServeFlags),
    Help,
    ServeHelp,
    Version,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, Error> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|first| first == "serve") {
        args.next();
        return parse_serve(lexopt::Parser::from_args(args));
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags = Flags::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(name) => {
                let flag = format!("--{name}");
                let Some(opt) = OPTIONS.iter().find(|opt| opt.flag == flag) else {
                    return Err(usage(format!("unknown flag {flag}")));
                };
                let value = if opt.value.starts_with('[') {
                    // Boolean: `--dry-run` alone means true; `--dry-run=false` is explicit.
                    parser
                        .optional_value()
                        .map_or(Ok("true".to_owned()), text)?
                } else {
                    text(parser.value().map_err(usage)?)?
                };
                flags.values.push((opt, value));
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(Command::Close(flags))
}

fn parse_serve(mut parser: lexopt::Parser) -> Result<Command, Error> {
    let mut flags = ServeFlags::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::ServeHelp),
            Long("listen") => flags.listen = Some(text(parser.value().map_err(usage)?)?),
            Long("config") => flags.config = Some(parser.value().map_err(usage)?.into()),
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(Command::Serve(flags))
}

fn text(value: OsString) -> Result<String, Error> {
    value
        .into_string()
        .map_err(|_| usage("a flag value is not valid UTF-8"))
}

fn usage(err: impl std::fmt::Display) -> Error {
    Error::config(format!("{err}; see --help"))
}

pub fn help() -> String {
    let mut text = format!(
        "coveralls-finish {}\n\
         Close a Coveralls parallel build once every parallel job has uploaded.\n\n\
         Usage: coveralls-finish [OPTIONS]\n\n\
         The repo token is read from COVERALLS_REPO_TOKEN only (a Coveralls repo token, or a\n\
         GitHub Actions GITHUB_TOKEN): never from a flag, where process listings would show it.\n\
         Every flag overrides its variable; an empty variable counts as unset.\n\nOptions:\n",
        env!("CARGO_PKG_VERSION")
    );
    for opt in OPTIONS {
        let sep = if opt.value.starts_with('[') { "" } else { " " };
        text += &format!(
            "  {}{sep}{}\n      {}\n      [env: {}] [default: {}]\n",
            opt.flag, opt.value, opt.help, opt.var, opt.default
        );
    }
    text += "  -h, --help       print this help\n  -V, --version    print the version\n\n\
             The receiver: coveralls-finish serve --help\n\n\
             Exit codes: 0 closed (or a failure softened by COVERALLS_FAIL_ON_ERROR=false),\n\
             1 the close failed, 2 configuration error.\n";
    text
}

pub fn serve_help() -> String {
    format!(
        "coveralls-finish {} serve\n\
         Receive CircleCI webhooks and Magnum CI hooks; close the matching Coveralls build.\n\n\
         Usage: coveralls-finish serve [--listen ADDR] [--config FILE]\n\n\
         Options:\n  \
         --listen ADDR\n      address and port to listen on\n      \
         [env: COVERALLS_FINISH_LISTEN] [default: 127.0.0.1:8080]\n  \
         --config FILE\n      TOML file of projects; without it, one project from the environment\n  \
         -h, --help\n      print this help\n\n\
         Environment: CIRCLECI_WEBHOOK_SECRET (switches /circleci on), MAGNUM_HOOK_SECRET\n\
         (switches /magnum on), COVERALLS_REPO_TOKEN, COVERALLS_ENDPOINT,\n\
         COVERALLS_CARRYFORWARD_FLAGS, COVERALLS_RETRIES, COVERALLS_TIMEOUT.\n\
         Routes: POST /circleci, POST /magnum?secret=..., GET /healthz.\n\
         Stops on SIGTERM or SIGINT after finishing what is in flight.\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn values_and_booleans() {
        let Command::Close(flags) =
            parse_args(&["--build-number", "12", "--dry-run", "--debug=false"]).unwrap()
        else {
            panic!("expected a close");
        };
        assert_eq!(flags.get("--build-number"), Some("12"));
        assert_eq!(flags.get("--dry-run"), Some("true"));
        assert_eq!(flags.get("--debug"), Some("false"));
        assert_eq!(flags.get("--endpoint"), None);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_usage_errors() {
        let err = parse_args(&["--repo-token", "x"]).unwrap_err().to_string();
        assert!(err.contains("unknown flag --repo-token"), "{err}");
        let err = parse_args(&["--timeout"]).unwrap_err().to_string();
        assert!(err.contains("--timeout"), "{err}");
        assert!(parse_args(&["stray"]).is_err());
    }

    #[test]
    fn serve_is_a_subcommand_with_its_own_flags() {
        let Command::Serve(flags) =
            parse_args(&["serve", "--listen", "0.0.0.0:9", "--config", "p.toml"]).unwrap()
        else {
            panic!("expected serve");
        };
        assert_eq!(flags.listen.as_deref(), Some("0.0.0.0:9"));
        assert_eq!(flags.config, Some("p.toml".into()));
        assert!(parse_args(&["serve", "--build-number", "1"]).is_err());
        assert!(matches!(
            parse_args(&["serve", "-h"]),
            Ok(Command::ServeHelp)
        ));
    }

    #[test]
    fn help_lists_every_flag_with_its_variable() {
        let help = help();
        for opt in OPTIONS {
            assert!(
                help.contains(opt.flag) && help.contains(opt.var),
                "{}",
                opt.flag
            );
        }
    }
}
