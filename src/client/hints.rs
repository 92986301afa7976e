//! Hints: what to do about a refusal, from the server's words and what was sent.

use super::body::Build;

/// What was sent, for the hints: the build, and the kind of token (never the token).
pub(super) struct Sent<'a> {
    build: &'a Build,
    token: &'static str,
}

impl<'a> Sent<'a> {
    pub(super) fn new(build: &'a Build, token: &str) -> Self {
        let github = ["ghs_", "ghp_", "gho_", "ghu_", "ghr_", "github_pat_"];
        let token = match github.iter().any(|prefix| token.starts_with(prefix)) {
            true => "a GitHub token (GITHUB_TOKEN)",
            false => "a Coveralls repo token",
        };
        Sent { build, token }
    }
}

/// What to do about a refusal, from the server's words and status.
pub(super) fn hint(status: u16, why: &str, sent: &Sent<'_>) -> Option<String> {
    let (build, said) = (sent.build, why.to_ascii_lowercase());
    if said.contains("no build matching") {
        let create = match build.carryforward.is_empty() {
            true => {
                "; with carryforward flags (and the commit and branch, sent when known), \
                 Coveralls creates the build instead, as for a monorepo whose coverage jobs \
                 were all skipped"
            }
            false => "",
        };
        return Some(format!(
            "sent build number {} (from {}); the parallel uploads must have sent the same \
             service_number, and at least one must have reached Coveralls with parallel: \
             true{create}",
            build.number(),
            build.number_from
        ));
    }
    if said.contains("already closed") {
        return Some(
            "the build was closed before: a re-run of a workflow keeps its build number (and \
             Coveralls cannot reopen a build), or a job closed it before every upload was in \
             (a `needs:` that misses an upload job)"
                .to_owned(),
        );
    }
    let about_the_token = said.contains("couldn't find a repository")
        || said.contains("invalid github token")
        || matches!(status, 401 | 403 | 422);
    about_the_token.then(|| {
        let repo_name = match &build.fields().repo_name {
            Some(name) => format!("with repo_name {name}"),
            None => "without repo_name".to_owned(),
        };
        format!(
            "sent {} {repo_name}. A GITHUB_TOKEN works only with the repository's name \
             (COVERALLS_REPO_NAME, detected on GitHub); a repo token must be this repository's, \
             from its page on Coveralls. Pull requests from forks and from Dependabot get no \
             secrets, so there the token set is not the one sent",
            sent.token
        )
    })
}
