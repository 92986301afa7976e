//! `coveralls-finish healthcheck [URL]`: a GET of a running receiver's `/healthz`, for a
//! container's `HEALTHCHECK`, where there is no shell and no curl.

use std::time::Duration;

use crate::env::Env;
use crate::error::Error;
use crate::report::Reporter;
use crate::settings::{Flags, Key, Values};

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let url = match flags.operands.as_slice() {
        [] => {
            let values = Values::read(env, flags)?;
            let listen = values.get(Key::Listen).expect("a default");
            health_url(listen.value)
        }
        [url] => url.clone(),
        _ => {
            return Err(Error::config(
                "healthcheck takes one URL at most; see --help",
            ));
        }
    };
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        // A receiver on this machine: no proxy between.
        .proxy(None)
        .build()
        .new_agent();
    let mut answer = agent
        .get(&url)
        .call()
        .map_err(|err| Error::unavailable(format!("{url}: {err}")))?;
    let status = answer.status().as_u16();
    let body = answer.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        return Err(Error::unavailable(format!(
            "{url} answered {status}: {}",
            body.trim()
        )));
    }
    ui.result(body.trim());
    Ok(())
}

/// `/healthz` at the address the receiver listens on: on loopback where it listens on every
/// address (`0.0.0.0`, `[::]`), which is where a container's receiver listens.
fn health_url(listen: &str) -> String {
    let listen = listen.trim();
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8080"));
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        host => host,
    };
    format!("http://{host}:{port}/healthz")
}

#[cfg(test)]
mod tests {
    use super::health_url;

    #[test]
    fn the_url_is_the_listen_address_with_loopback_for_every_address() {
        assert_eq!(health_url("0.0.0.0:8080"), "http://127.0.0.1:8080/healthz");
        assert_eq!(health_url("[::]:9000"), "http://[::1]:9000/healthz");
        assert_eq!(
            health_url("127.0.0.1:8081"),
            "http://127.0.0.1:8081/healthz"
        );
        assert_eq!(
            health_url("hooks.internal:80"),
            "http://hooks.internal:80/healthz"
        );
    }
}
