//! Close a Coveralls parallel build: work out the build number the uploads used, POST the
//! Parallel Build Webhook, retry what may pass, and report the result. `serve` receives CI
//! webhooks and closes builds from them. See ARCHITECTURE.md for the map of the modules.

mod checks;
mod ci;
mod client;
mod close;
mod commit;
mod config;
mod coveralls_yml;
mod env;
mod error;
mod event;
mod fields;
mod random;
mod report;
#[cfg(feature = "serve")]
mod serve;
mod settings;

use std::ffi::OsString;
use std::io::Write;

/// The CIs the closer knows, for tests/parity.rs's check that each has its cases; not an API.
#[doc(hidden)]
pub use ci::names as ci_names;
pub use env::Env;
use report::Reporter;
use settings::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The whole program: arguments and environment in, lines out, the exit code back.
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut ui = Reporter::new(out, err, env);
    match settings::parse(args) {
        Ok(Command::Help(cmd)) => {
            ui.result(help(cmd).trim_end());
            0
        }
        Ok(Command::Version) => {
            ui.result(&format!("coveralls-finish {VERSION}"));
            0
        }
        Ok(Command::Serve(flags) | Command::Deliveries(flags) | Command::Healthcheck(flags)) => {
            match receiver(&flags, env, &mut ui) {
                Ok(()) => 0,
                Err(error) => {
                    ui.error(&error.to_string());
                    error.exit_code()
                }
            }
        }
        Ok(Command::Close(flags)) => close::run(Ok(flags), env, &mut ui),
        Err(error) => close::run(Err(error), env, &mut ui),
    }
}

/// `--help`; the receiver's adds what only it knows: its sources' variables and routes.
fn help(cmd: settings::Cmd) -> String {
    let text = settings::help(cmd);
    #[cfg(feature = "serve")]
    if cmd == settings::Cmd::Serve {
        return text + &serve::help();
    }
    text
}

/// `serve`, `deliveries` and `healthcheck`: the receiver, the command that reads its store,
/// and the one that asks it how it is.
#[cfg(feature = "serve")]
fn receiver(flags: &settings::Flags, env: &Env, ui: &mut Reporter<'_>) -> Result<(), error::Error> {
    match flags.cmd {
        settings::Cmd::Deliveries => serve::deliveries(flags, env, ui),
        settings::Cmd::Healthcheck => serve::healthcheck(flags, env, ui),
        _ => serve::run(flags, env, ui),
    }
}

/// The binary the GitHub Action downloads carries only the closer.
#[cfg(not(feature = "serve"))]
fn receiver(_: &settings::Flags, _: &Env, _: &mut Reporter<'_>) -> Result<(), error::Error> {
    Err(error::Error::config(
        "this coveralls-finish was built without the receiver (cargo feature `serve`); \
         download the coveralls-finish-serve-<target> asset of the release, or run \
         `cargo install coveralls-finish`",
    ))
}
