//! What a close carries in `git`, as coverage-reporter's `git.cr` works it out: the branch,
//! and the head commit with its details (author, committer, message), from the CI's
//! variables or GitHub's event payload, with no checkout needed. Only where none of them
//! tells, and only in a git work tree with git on PATH, from git itself.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ci::HeadFrom;
use crate::env::Env;
use crate::error::Error;
use crate::event::Event;

/// How long `git log` may take before it is given up on.
const GIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The body's `git`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Git {
    pub branch: Option<String>,
    /// Sent only with its id.
    pub head: Head,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub id: Option<String>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub committer_name: Option<String>,
    pub committer_email: Option<String>,
    pub message: Option<String>,
}

impl Head {
    /// Whether it tells nothing of the commit but, perhaps, its id.
    pub fn has_no_details(&self) -> bool {
        Head {
            id: None,
            ..self.clone()
        } == Head::default()
    }
}

/// The variables that any CI may set, and GitLab's `CI_COMMIT_AUTHOR`.
pub fn from_variables(env: &Env, from: Option<HeadFrom>) -> Result<Head, Error> {
    let first = |names: &[&str]| env.first_text(names);
    let mut head = Head {
        id: first(&["CI_COMMIT_ID", "GIT_ID"])?,
        author_name: first(&["CI_AUTHOR_NAME", "GIT_AUTHOR_NAME"])?,
        author_email: first(&["CI_AUTHOR_EMAIL", "GIT_AUTHOR_EMAIL"])?,
        committer_name: first(&["CI_COMMITTER_NAME", "GIT_COMMITTER_NAME"])?,
        committer_email: first(&["CI_COMMITTER_EMAIL", "GIT_COMMITTER_EMAIL"])?,
        message: first(&["CI_COMMIT_MESSAGE", "GIT_MESSAGE"])?,
    };
    if from == Some(HeadFrom::GitLab) {
        if let Some((name, email)) = first(&["CI_COMMIT_AUTHOR"])?.as_deref().and_then(person) {
            head.author_name.get_or_insert(name);
            head.author_email.get_or_insert(email);
        }
    }
    Ok(head)
}

/// `Name <email>`.
fn person(text: &str) -> Option<(String, String)> {
    let (name, rest) = text.split_once('<')?;
    let email = rest.strip_suffix('>')?;
    Some((name.trim().to_owned(), email.trim().to_owned()))
}

/// A push's head commit in GitHub's event, where it is `commit`.
pub fn from_github_event(event: &Event, commit: &str) -> Option<Head> {
    if event.head_commit_id() != Some(commit) {
        return None;
    }
    let (author, committer) = (
        event.head_commit_person("author"),
        event.head_commit_person("committer"),
    );
    let owned = |text: Option<&str>| text.map(str::to_owned);
    Some(Head {
        id: Some(commit.to_owned()),
        author_name: owned(author.name),
        author_email: owned(author.email),
        committer_name: owned(committer.name),
        committer_email: owned(committer.email),
        message: owned(event.head_commit_message()),
    })
}

/// `git log -1` of `commit` (or of `HEAD`), with the `PATH` of `env`: the commit, its id
/// included, or why there is none. Never waits longer than [`GIT_TIMEOUT`].
pub fn from_git_log(commit: Option<&str>, env: &Env) -> Result<Head, String> {
    git_log_in(&working_dir()?, commit, env)
}

/// The branch checked out, as `git rev-parse --abbrev-ref HEAD` says (a detached `HEAD` names
/// none), or why there is none. Never waits longer than [`GIT_TIMEOUT`].
pub fn branch_from_git(env: &Env) -> Result<String, String> {
    let branch = git_in(&working_dir()?, env, &["rev-parse", "--abbrev-ref", "HEAD"])?;
    match branch.trim() {
        "" | "HEAD" => Err("a detached HEAD, on no branch".to_owned()),
        branch => Ok(branch.to_owned()),
    }
}

fn working_dir() -> Result<std::path::PathBuf, String> {
    std::env::current_dir().map_err(|err| format!("no working directory: {err}"))
}

/// [`from_git_log`] in `dir`.
fn git_log_in(dir: &Path, commit: Option<&str>, env: &Env) -> Result<Head, String> {
    let format = "--format=%H%x00%an%x00%ae%x00%cn%x00%ce%x00%B";
    let args = ["log", "-1", "--no-show-signature", format];
    let output = git_in(
        dir,
        env,
        &[&args[..], &[commit.unwrap_or("HEAD"), "--"]].concat(),
    )?;
    let fields: Vec<&str> = output.splitn(6, '\0').collect();
    let [
        id,
        author_name,
        author_email,
        committer_name,
        committer_email,
        message,
    ] = fields[..]
    else {
        return Err("git log printed something unexpected".to_owned());
    };
    let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(Head {
        id: text(id),
        author_name: text(author_name),
        author_email: text(author_email),
        committer_name: text(committer_name),
        committer_email: text(committer_email),
        message: text(message),
    })
}

/// `git ARGS` in `dir` with the `PATH` of `env` and little else of it: what it printed.
/// Nothing is started outside a work tree, or where `PATH` holds no git.
fn git_in(dir: &Path, env: &Env, args: &[&str]) -> Result<String, String> {
    let Some(path) = env.get("PATH").ok().flatten() else {
        return Err("no PATH to find git on".to_owned());
    };
    // Looked for first, so that a finishing job without a checkout starts no process.
    if !in_a_work_tree(dir, env) {
        return Err("not in a git work tree".to_owned());
    }
    if !on_path(path, "git") {
        return Err("no git on PATH".to_owned());
    }
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for keep in ["HOME", "SYSTEMROOT", "GIT_DIR", "GIT_WORK_TREE"] {
        if let Some(value) = env.get(keep).ok().flatten() {
            command.env(keep, value);
        }
    }
    run(command, args[0])
}

/// Whether `dir` is in a git work tree: `GIT_DIR` is set, or it or a directory above it
/// holds `.git`.
fn in_a_work_tree(dir: &Path, env: &Env) -> bool {
    env.is_set("GIT_DIR") || dir.ancestors().any(|dir| dir.join(".git").exists())
}

/// Whether `program` is a file in one of `path`'s directories.
fn on_path(path: &str, program: &str) -> bool {
    let names = [program.to_owned(), format!("{program}.exe")];
    std::env::split_paths(path).any(|dir| names.iter().any(|name| dir.join(name).is_file()))
}

/// Run `command` (`git WHAT …`) to its end within [`GIT_TIMEOUT`]; its standard output (at
/// most 1 MiB).
fn run(mut command: Command, what: &str) -> Result<String, String> {
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot run git: {err}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reading = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < GIT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "git {what} took over {GIT_TIMEOUT:?}, so it was stopped"
                ));
            }
        }
    };
    let text = reading.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "git {what} failed ({status}): not a git work tree?"
        ));
    }
    String::from_utf8(text).map_err(|_| format!("git {what} printed text that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_then_gitlab_s_author() {
        let env = Env::from_pairs([
            ("GIT_AUTHOR_NAME", "Ada"),
            ("CI_AUTHOR_EMAIL", "ada@example.com"),
            ("CI_COMMIT_MESSAGE", "Fix it\n\nand more"),
            ("CI_COMMIT_AUTHOR", "Grace Hopper <grace@example.com>"),
        ]);
        let head = from_variables(&env, Some(HeadFrom::Variables)).unwrap();
        assert_eq!(head.author_name.as_deref(), Some("Ada"));
        assert_eq!(head.message.as_deref(), Some("Fix it\n\nand more"));
        assert_eq!(head.committer_name, None);
        let env = Env::from_pairs([("CI_COMMIT_AUTHOR", "Grace Hopper <grace@example.com>")]);
        let head = from_variables(&env, Some(HeadFrom::GitLab)).unwrap();
        assert_eq!(head.author_name.as_deref(), Some("Grace Hopper"));
        assert_eq!(head.author_email.as_deref(), Some("grace@example.com"));
        assert_eq!(
            from_variables(&env, Some(HeadFrom::Variables)).unwrap(),
            Head::default()
        );
        let env = Env::from_pairs([("GIT_ID", "def"), ("CI_MESSAGE", "not read")]);
        let head = from_variables(&env, None).unwrap();
        assert_eq!(
            head.id.as_deref(),
            Some("def"),
            "git.cr's CI_COMMIT_ID, else GIT_ID"
        );
        assert!(head.has_no_details());
    }

    #[test]
    fn a_push_s_head_commit_counts_only_for_its_own_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.json");
        let text = r#"{"head_commit": {"id": "abc", "message": "m", "author": {"name": "A"}}}"#;
        std::fs::write(&path, text).unwrap();
        let event = crate::event::read(path.to_str().unwrap()).unwrap();
        let head = from_github_event(&event, "abc").unwrap();
        assert_eq!(
            (head.author_name.as_deref(), head.message.as_deref()),
            (Some("A"), Some("m"))
        );
        assert_eq!(head.committer_name, None);
        assert!(from_github_event(&event, "def").is_none());
    }

    #[test]
    fn no_path_no_work_tree_or_no_git_means_no_process() {
        let outside = tempfile::tempdir().unwrap();
        let (dir, no_git) = (outside.path(), Env::from_pairs([("PATH", "/nonexistent")]));
        let err = git_log_in(dir, None, &Env::default()).unwrap_err();
        assert!(err.contains("no PATH"), "{err}");
        let err = git_log_in(dir, None, &no_git).unwrap_err();
        assert_eq!(err, "not in a git work tree");
        std::fs::create_dir(dir.join(".git")).unwrap();
        let err = git_log_in(dir, None, &no_git).unwrap_err();
        assert_eq!(err, "no git on PATH");
        assert!(!on_path("/nonexistent", "git"));
    }
}
