//! The GitHub Action's launcher (`action/launch.sh`), run here as the runner would run it:
//! fake release assets from a loopback server, a fake action checkout, a fake cargo.
#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{CLOSED, Server, json};

const VERSION: &str = "9.9.9";
const PLATFORMS: [(&str, &str, &str); 6] = [
    ("Linux", "X64", "coveralls-finish-x86_64-unknown-linux-musl"),
    (
        "Linux",
        "ARM64",
        "coveralls-finish-aarch64-unknown-linux-musl",
    ),
    ("macOS", "X64", "coveralls-finish-x86_64-apple-darwin"),
    ("macOS", "ARM64", "coveralls-finish-aarch64-apple-darwin"),
    (
        "Windows",
        "X64",
        "coveralls-finish-x86_64-pc-windows-msvc.exe",
    ),
    (
        "Windows",
        "ARM64",
        "coveralls-finish-aarch64-pc-windows-msvc.exe",
    ),
];

/// A stand-in for a release binary: says which asset it is, and records what it was given.
fn fake_binary(name: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\necho \"fake binary {name} ran\"\nenv | grep '^COVERALLS_' | sort > \"$RUNNER_TEMP/env.log\"\n"
    )
    .into_bytes()
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A checkout of the action, as the runner lays it out, with its own pins.
struct Checkout {
    dir: tempfile::TempDir,
    temp: tempfile::TempDir,
    bin: tempfile::TempDir,
}

impl Checkout {
    fn new(sums: &[(&str, &[u8])]) -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("action")).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/action/launch.sh"),
            dir.path().join("action/launch.sh"),
        )
        .unwrap();
        std::fs::write(dir.path().join("action/VERSION"), format!("{VERSION}\n")).unwrap();
        let lines: String = sums
            .iter()
            .map(|(name, bytes)| format!("{}  {name}\n", sha256(bytes)))
            .collect();
        std::fs::write(dir.path().join("action/SHA256SUMS"), lines).unwrap();
        Checkout {
            dir,
            temp: tempfile::tempdir().unwrap(),
            bin: tempfile::tempdir().unwrap(),
        }
    }

    /// Put a fake `cargo` on PATH that "builds" a binary and records its arguments.
    fn with_fake_cargo(self) -> Self {
        let script = "#!/bin/sh\necho \"$@\" > \"$RUNNER_TEMP/cargo.args\"\n\
                      while [ $# -gt 0 ]; do [ \"$1\" = --target-dir ] && dir=$2; shift; done\n\
                      mkdir -p \"$dir/closer\"\n\
                      printf '#!/bin/sh\\necho built from source ran\\n' > \"$dir/closer/coveralls-finish\"\n\
                      chmod +x \"$dir/closer/coveralls-finish\"\n";
        write_executable(&self.bin.path().join("cargo"), script.as_bytes());
        self
    }

    fn run(&self, env: &[(&str, &str)]) -> (i32, String) {
        // Only system tools, and the fake cargo if there is one: never the real toolchain.
        let path = format!("{}:/usr/bin:/bin", self.bin.path().display());
        let output = Command::new("bash")
            .arg(self.dir.path().join("action/launch.sh"))
            .env_clear()
            .env("PATH", path)
            .env("GITHUB_ACTION_PATH", self.dir.path())
            .env("RUNNER_TEMP", self.temp.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code().unwrap_or(-1), text)
    }

    fn temp_file(&self, name: &str) -> PathBuf {
        self.temp.path().join(name)
    }
}

fn write_executable(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn release(assets: &[(&str, Vec<u8>)]) -> Server {
    Server::files(
        assets
            .iter()
            .map(|(name, bytes)| (format!("/v{VERSION}/{name}"), bytes.clone()))
            .collect(),
    )
}

#[test]
fn each_runner_gets_its_own_asset() {
    let assets: Vec<(&str, Vec<u8>)> = PLATFORMS
        .iter()
        .map(|(_, _, name)| (*name, fake_binary(name)))
        .collect();
    let sums: Vec<(&str, &[u8])> = assets
        .iter()
        .map(|(name, bytes)| (*name, bytes.as_slice()))
        .collect();
    let server = release(&assets);
    for (os, arch, name) in PLATFORMS {
        let checkout = Checkout::new(&sums);
        let base = server.url();
        let (code, out) = checkout.run(&[
            ("RUNNER_OS", os),
            ("RUNNER_ARCH", arch),
            ("COVERALLS_FINISH_DOWNLOAD_BASE", &base),
        ]);
        assert_eq!(code, 0, "{os}/{arch}: {out}");
        assert!(
            out.contains(&format!("fake binary {name} ran")),
            "{os}/{arch}: {out}"
        );
        let last = server.requests().pop().unwrap();
        assert_eq!(last.target, format!("/v{VERSION}/{name}"));
    }
}

#[test]
fn a_checksum_mismatch_is_never_run() {
    let name = PLATFORMS[0].2;
    let server = release(&[(name, fake_binary(name))]);
    let checkout = Checkout::new(&[(name, b"the bytes that were released")]);
    let base = server.url();
    let (code, out) = checkout.run(&[
        ("RUNNER_OS", "Linux"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", &base),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("ran"), "the unverified binary ran: {out}");
    assert!(
        out.contains(&format!(
            "::warning title=coveralls-finish::checksum mismatch for {name}"
        )),
        "{out}"
    );
    assert!(
        out.contains("::error title=coveralls-finish::the downloaded"),
        "{out}"
    );
    assert!(out.contains("cargo is not available"), "{out}");
    assert!(
        !checkout
            .temp_file(&format!(
                "coveralls-finish-{VERSION}-x86_64-unknown-linux-musl/coveralls-finish"
            ))
            .exists()
    );
}

#[test]
fn a_missing_asset_falls_back_to_building_from_source() {
    let name = PLATFORMS[0].2;
    let server = release(&[]);
    let checkout = Checkout::new(&[(name, b"released")]).with_fake_cargo();
    let base = server.url();
    let (code, out) = checkout.run(&[
        ("RUNNER_OS", "Linux"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", &base),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("could not download {name} {VERSION}; building coveralls-finish from the action's source")), "{out}");
    assert!(out.contains("built from source ran"), "{out}");
    let args = std::fs::read_to_string(checkout.temp_file("cargo.args")).unwrap();
    assert!(
        args.starts_with("build --profile closer --no-default-features --locked"),
        "{args}"
    );
    assert!(
        args.contains(&format!(
            "--manifest-path {}/Cargo.toml",
            checkout.dir.path().display()
        )),
        "{args}"
    );
}

#[test]
fn no_asset_for_the_platform_and_no_cargo_obeys_fail_on_error() {
    let checkout = Checkout::new(&[]);
    let (code, out) = checkout.run(&[("RUNNER_OS", "FreeBSD"), ("RUNNER_ARCH", "X64")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "::error title=coveralls-finish::no prebuilt coveralls-finish for FreeBSD/X64"
        ),
        "{out}"
    );
    let (code, out) = checkout.run(&[
        ("RUNNER_OS", "FreeBSD"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FAIL_ON_ERROR", "false"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("::warning title=coveralls-finish::no prebuilt"),
        "{out}"
    );
}

#[test]
fn a_verified_cached_binary_is_reused_and_a_tampered_one_replaced() {
    let name = PLATFORMS[2].2;
    let binary = fake_binary(name);
    let server = release(&[(name, binary.clone())]);
    let checkout = Checkout::new(&[(name, &binary)]);
    let base = server.url();
    let env = [
        ("RUNNER_OS", "macOS"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", base.as_str()),
    ];
    assert_eq!(checkout.run(&env).0, 0);
    let (code, out) = checkout.run(&env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("using the verified binary cached in"), "{out}");
    assert_eq!(server.requests().len(), 1, "downloaded once");

    let cached = checkout.temp_file(&format!(
        "coveralls-finish-{VERSION}-x86_64-apple-darwin/coveralls-finish"
    ));
    write_executable(&cached, b"#!/bin/sh\necho tampered ran\n");
    let (code, out) = checkout.run(&env);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("tampered ran") && out.contains("checksum mismatch"),
        "{out}"
    );
    assert!(out.contains(&format!("fake binary {name} ran")), "{out}");
    assert_eq!(server.requests().len(), 2, "downloaded again");
}

#[test]
fn plain_http_is_refused_unless_the_server_is_this_machine() {
    let name = PLATFORMS[0].2;
    let server = release(&[(name, fake_binary(name))]);
    let checkout = Checkout::new(&[(name, &fake_binary(name))]);
    // 127.1 is 127.0.0.1 written short: it reaches the server, but is not one of the two
    // spellings the launcher allows plain http for, so only the protocol can stop it.
    let base = server.url().replace("127.0.0.1", "127.1");
    let reached = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .arg(format!("{base}/v{VERSION}/{name}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&reached.stdout), "200");
    assert_eq!(server.requests().len(), 1);

    let (code, out) = checkout.run(&[
        ("RUNNER_OS", "Linux"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", &base),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(r#"Protocol "http" not supported"#), "{out}");
    assert!(out.contains("could not download"), "{out}");
    assert_eq!(server.requests().len(), 1, "the launcher sent nothing");
}

#[test]
fn the_repository_comes_from_the_action_path_when_the_runner_leaves_it_empty() {
    // Without a download base, the URL is built from GITHUB_SERVER_URL and the checkout path.
    let name = PLATFORMS[0].2;
    let server = release(&[]);
    let checkout = Checkout::new(&[(name, b"released")]);
    let nested = checkout.dir.path().join("_actions/octo/finish/v1");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::rename(checkout.dir.path().join("action"), nested.join("action")).unwrap();
    let output = Command::new("bash")
        .arg(nested.join("action/launch.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_ACTION_PATH", &nested)
        .env("RUNNER_TEMP", checkout.temp.path())
        .env("RUNNER_OS", "Linux")
        .env("RUNNER_ARCH", "X64")
        .env("GITHUB_SERVER_URL", server.url())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains(&format!(
            "downloading {}/octo/finish/releases/download/v{VERSION}/{name}",
            server.url()
        )),
        "{out}"
    );
    assert_eq!(
        server.only_request().target,
        format!("/octo/finish/releases/download/v{VERSION}/{name}")
    );
}

#[test]
fn the_real_binary_runs_through_the_launcher_and_outputs_come_back() {
    let name = PLATFORMS[0].2;
    let real = std::fs::read(env!("CARGO_BIN_EXE_coveralls-finish")).unwrap();
    let assets = release(&[(name, real.clone())]);
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let checkout = Checkout::new(&[(name, &real)]);
    let output_file = checkout.temp_file("github_output");
    let (base, endpoint) = (assets.url(), coveralls.url());
    let (code, out) = checkout.run(&[
        ("RUNNER_OS", "Linux"),
        ("RUNNER_ARCH", "X64"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", &base),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_OUTPUT", output_file.to_str().unwrap()),
        ("GITHUB_RUN_ID", "31337"),
        ("COVERALLS_REPO_TOKEN", "ghs_launcher_token"),
        ("COVERALLS_ENDPOINT", &endpoint),
        ("COVERALLS_CARRYFORWARD_FLAGS", "a,b"),
    ]);
    assert_eq!(code, 0, "{out}");
    let sent = coveralls.only_request().json();
    assert_eq!(
        (
            sent["service_number"].as_str(),
            sent["carryforward"].as_str()
        ),
        (Some("31337"), Some("a,b"))
    );
    let outputs = std::fs::read_to_string(output_file).unwrap();
    assert!(
        outputs.contains("\nhttps://coveralls.io/builds/77\n") && outputs.starts_with("url<<"),
        "{outputs}"
    );
    assert!(
        outputs.contains("jobs<<") && outputs.contains("build-number<<"),
        "{outputs}"
    );
}

/// Every input reaches the binary as the variable it documents, through `env:` only.
#[test]
fn action_yml_maps_each_input_to_its_variable_and_never_into_the_script() {
    let yml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap();
    for (var, input) in [
        ("COVERALLS_REPO_TOKEN", "github-token"),
        ("COVERALLS_CARRYFORWARD_FLAGS", "carryforward"),
        ("COVERALLS_SERVICE_NUMBER", "build-number"),
        ("COVERALLS_ENDPOINT", "coveralls-endpoint"),
        ("COVERALLS_FAIL_ON_ERROR", "fail-on-error"),
        ("COVERALLS_DEBUG", "debug"),
        ("COVERALLS_DRY_RUN", "dry-run"),
        ("COVERALLS_RETRIES", "retries"),
        ("COVERALLS_TIMEOUT", "timeout"),
        ("COVERALLS_REPO_NAME", "repo-name"),
        ("COVERALLS_FINISH_DOWNLOAD_BASE", "download-base"),
    ] {
        let line = format!("{var}: ${{{{ inputs.{input} }}}}");
        assert!(yml.contains(&line), "action.yml lacks `{line}`");
        assert!(
            yml.contains(&format!("\n  {input}:\n")),
            "input {input} is not declared"
        );
    }
    let run = yml
        .lines()
        .find(|l| l.trim_start().starts_with("run:"))
        .unwrap();
    assert!(!run.contains("${{"), "an expression inside run: {run}");
    for output in ["url", "jobs", "build-number", "coveralls-api-result"] {
        assert!(
            yml.contains(&format!("value: ${{{{ steps.finish.outputs.{output} }}}}")),
            "{output}"
        );
    }
}
