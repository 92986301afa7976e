use std::process::ExitCode;

use coveralls_finish::Env;

#[cfg(all(feature = "serve", target_env = "musl", target_pointer_width = "64"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1);
    let env = Env::from_process();
    let code = coveralls_finish::run(args, &env, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
