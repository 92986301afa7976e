//! The request's wire format: the official reporter's JSON body, from a [`Build`].

use serde_json::{Map, Value, json};

use crate::commit::Git;
use crate::fields::Fields;

/// The build to close: everything the request says but the token. The receiver keeps it in
/// its store as JSON, as serde writes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Build {
    /// The fields the body sends, each only when known; the number always is, which is why
    /// they are set through [`Build::new`] alone.
    fields: Fields<Option<String>>,
    /// Where the number came from, for logs and hints: a flag, a variable, `VAR, CI name`.
    pub number_from: String,
    pub carryforward: Vec<String>,
    /// The branch and the head commit, as git knows them (coverage-reporter's `Git.info`).
    pub git: Git,
}

impl Build {
    /// A build numbered `number`, with `fields` (their number is `number`), no carryforward
    /// flags and nothing known of git.
    pub fn new(number: String, number_from: String, fields: Fields<Option<String>>) -> Build {
        Build {
            fields: Fields {
                number: Some(number),
                ..fields
            },
            number_from,
            carryforward: Vec::new(),
            git: Git::default(),
        }
    }

    pub fn number(&self) -> &str {
        self.fields.number.as_deref().unwrap_or_default()
    }

    pub fn fields(&self) -> &Fields<Option<String>> {
        &self.fields
    }
}

/// The request's body for `build`, as JSON: the one form in which it is both sent and, in a
/// dry run, shown (one serializer of it in the binary, not one a form).
///
/// What the official reporter sends (each field only when known), with the token in it,
/// never in the URL, where proxies and servers would log it; and `git`, which Coveralls
/// needs, with `carryforward`, to create a build that no upload made.
pub fn body(build: &Build, repo_token: &str) -> Value {
    let mut body = Map::new();
    body.insert("repo_token".into(), repo_token.into());
    insert_known(&mut body, build.fields.entries());
    if !build.carryforward.is_empty() {
        body.insert("carryforward".into(), build.carryforward.join(",").into());
    }
    if let Some(git) = git(&build.git) {
        body.insert("git".into(), git);
    }
    body.insert(
        "payload".into(),
        json!({"build_num": build.number(), "status": "done"}),
    );
    Value::Object(body)
}

/// `git`: the branch, and the head commit with what is known of it, where its id is.
fn git(git: &Git) -> Option<Value> {
    let mut map = Map::new();
    insert_known(&mut map, [("branch", &git.branch)]);
    let head = &git.head;
    if let Some(id) = &head.id {
        let mut details = Map::new();
        details.insert("id".into(), id.as_str().into());
        insert_known(
            &mut details,
            [
                ("author_name", &head.author_name),
                ("author_email", &head.author_email),
                ("committer_name", &head.committer_name),
                ("committer_email", &head.committer_email),
                ("message", &head.message),
            ],
        );
        map.insert("head".into(), Value::Object(details));
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

/// Each of `entries` whose value is known, into `map`.
fn insert_known<'a>(
    map: &mut Map<String, Value>,
    entries: impl IntoIterator<Item = (&'a str, &'a Option<String>)>,
) {
    for (key, value) in entries {
        if let Some(value) = value {
            map.insert(key.to_owned(), value.as_str().into());
        }
    }
}
