use std::process::ExitCode;

use coveralls_finish::Env;

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1);
    let env = Env::from_process();
    let code = coveralls_finish::run(args, &env, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
