//! Agents for one Coveralls endpoint: proxies, trusted roots, timeouts left to each request.

use ureq::Agent;
use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::USER_AGENT;
use super::tls::crypto_provider;
use crate::env::Env;
use crate::error::Error;

/// Connections each agent keeps alive for later requests.
const IDLE_CONNECTIONS: usize = 8;

/// An agent for one endpoint (checked by [`crate::config::parse_endpoint`]); each request
/// sets its own timeout.
pub fn agent(endpoint: &str, env: &Env) -> Result<Agent, Error> {
    Ok(agents(endpoint, env, 1, IDLE_CONNECTIONS)?.remove(0))
}

/// `count` agents for one endpoint, each with a connection pool of its own that keeps up to
/// `idle` connections: the receiver gives one to each worker, since threads sharing one
/// pool wait on each other.
pub fn agents(endpoint: &str, env: &Env, count: usize, idle: usize) -> Result<Vec<Agent>, Error> {
    let uri: Uri = endpoint.parse().expect("endpoint checked in config");
    let mut builder = Agent::config_builder()
        .http_status_as_error(false)
        // A redirect is reported, not followed: the token must not travel on to another host.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .accept("application/json")
        // Enough kept-alive connections for the receiver's closes at once: a new one costs a
        // handshake, and a thread of its own for the host's lookup.
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .proxy(proxy(env, &uri)?);
    if uri.scheme_str() == Some("https") {
        let tls = TlsConfig::builder()
            .root_certs(root_certs(env)?)
            .unversioned_rustls_crypto_provider(crypto_provider())
            .build();
        builder = builder.tls_config(tls);
    }
    let config = builder.build();
    Ok((0..count).map(|_| config.clone().new_agent()).collect())
}

/// The platform's roots (which `SSL_CERT_FILE` and `SSL_CERT_DIR` replace, as in OpenSSL),
/// so that a private CA works without ever turning verification off; where the platform has
/// none at all (a minimal container), the bundled Mozilla roots.
///
/// A bundle the user named must load whole: one that fails to would surface much later as
/// "not trusted", far from its cause. The platform's own store is the platform's business: a
/// file in it that cannot be read leaves the others.
fn root_certs(env: &Env) -> Result<RootCerts, Error> {
    let loaded = rustls_native_certs::load_native_certs();
    let named: Vec<&str> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter(|name| env.is_set(name))
        .collect();
    if let (Some(failed), false) = (loaded.errors.first(), named.is_empty()) {
        return Err(Error::config(format!(
            "{} is set, but its certificates cannot be loaded: {failed}",
            named.join(" and ")
        )));
    }
    if loaded.certs.is_empty() {
        return Ok(RootCerts::WebPki);
    }
    let platform = loaded
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned());
    Ok(RootCerts::from(platform))
}

/// `HTTPS_PROXY` or `HTTP_PROXY` by the endpoint's scheme, then `ALL_PROXY`; `NO_PROXY` applies.
fn proxy(env: &Env, endpoint: &Uri) -> Result<Option<ureq::Proxy>, Error> {
    let names: &[&str] = if endpoint.scheme_str() == Some("https") {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let mut found = None;
    for name in names {
        if let Some(value) = env.get(name)? {
            found = Some((*name, value));
            break;
        }
    }
    let Some((name, value)) = found else {
        return Ok(None);
    };
    // The value may hold a password: name the variable, never print the value.
    let bad = || Error::config(format!("{name} is not a valid proxy URL"));
    let parsed = ureq::Proxy::new(value).map_err(|_| bad())?;
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    for name in ["no_proxy", "NO_PROXY"] {
        for entry in env.get(name)?.unwrap_or_default().split(',') {
            builder = builder.no_proxy(entry.trim());
        }
    }
    let proxy = builder.build().map_err(|_| bad())?;
    Ok((!proxy.is_no_proxy(endpoint)).then_some(proxy))
}
