//! Docker helpers for nodeprep's container tests. Include from a test file:
//!
//! ```ignore
//! #[path = "common/docker.rs"]
//! mod docker;
//!
//! #[test]
//! fn something() {
//!     if !docker::docker_or_skip() {
//!         return;
//!     }
//!     let c = docker::Containers::new();
//!     let name = c.add("consul"); // a unique name, removed when `c` drops
//!     ...
//! }
//! ```
//!
//! The images are TEST STAND-INS, not Consul and not registrator (see
//! `standins/src/lib.rs`): `tests/docker/build-standins.sh` builds and
//! imports them; `tests/docker/ensure-dockerd.sh` starts a dockerd when none
//! answers. [`docker_ready`] runs both once per test process.
//!
//! Depends on std, serde_json and tempfile only (the root package's
//! dev-dependencies). Talks to the engine through the `docker` CLI with
//! `-H unix:///var/run/docker.sock`, whatever DOCKER_HOST says; a test
//! process that called [`podman_or_skip`] talks to rootful Podman's
//! Docker-compatible API instead (`-H unix:///run/podman/podman.sock`, the
//! same CLI), with the stand-ins loaded there by `tests/podman/`.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The socket the tests' dockerd listens on.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Where rootful Podman's Docker-compatible API listens
/// (`tests/podman/ensure-podman.sh`, podman.socket on a real host).
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// The engine a test process talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine of this test process: Docker unless [`podman_or_skip`] chose
/// Podman.
pub fn engine() -> Engine {
    *ENGINE.get().unwrap_or(&Engine::Docker)
}

/// The socket of [`engine`].
pub fn socket() -> &'static str {
    match engine() {
        Engine::Docker => DOCKER_SOCKET,
        Engine::Podman => PODMAN_SOCKET,
    }
}

/// Stand-in for `hashicorp/consul`: entrypoint `/bin/consul-standin`, default
/// CMD `["agent", "-dev", "-client", "0.0.0.0"]` (refused: exit 2), `VOLUME
/// /consul/data`, config dir `/consul/config`, runs as 100:1000.
pub const CONSUL_IMAGE: &str = "nodeprep-test/consul-standin:1";
/// Same program as [`CONSUL_IMAGE`], another image ID: for "image changed".
pub const CONSUL_IMAGE_2: &str = "nodeprep-test/consul-standin:2";
/// Stand-in for registrator: entrypoint `/bin/registrator-standin`, no CMD.
pub const REGISTRATOR_IMAGE: &str = "nodeprep-test/registrator-standin:1";
/// An idle container (`/bin/workload-standin`, no EXPOSE) whose published
/// ports registrator registers in tests.
pub const WORKLOAD_IMAGE: &str = "nodeprep-test/workload-standin:1";
/// The consul image's user: the stand-in runs as it, like the real agent.
pub const CONSUL_UID: u32 = 100;
pub const CONSUL_GID: u32 = 1000;

/// The line a stand-in prints once its checks passed and it blocks.
pub const READY_MARK: &str = ": ready: ";
/// The line a stand-in prints before exiting non-zero.
pub const ERROR_MARK: &str = ": error: ";

/// Exit code of ensure-dockerd.sh when no engine can be had here.
const NO_ENGINE: i32 = 77;

fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Outcome of the two scripts, computed once per test process:
/// Err((prerequisite_missing, why)).
fn ready_state() -> &'static Result<(), (bool, String)> {
    static READY: OnceLock<Result<(), (bool, String)>> = OnceLock::new();
    READY.get_or_init(|| {
        let started = Instant::now();
        for (script, skippable_code) in [
            ("ensure-dockerd.sh", Some(NO_ENGINE)),
            ("build-standins.sh", None),
        ] {
            let path = repo_dir().join("tests/docker").join(script);
            let out = Command::new("bash")
                .arg(&path)
                .current_dir(repo_dir())
                .output()
                .map_err(|e| (false, format!("cannot run {}: {e}", path.display())))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprint!("{stderr}");
            if !out.status.success() {
                let missing = out.status.code().is_some() && out.status.code() == skippable_code;
                let why = if missing {
                    stderr
                        .lines()
                        .rev()
                        .find(|l| l.contains("CANNOT HAVE A DOCKERD"))
                        .unwrap_or("no Docker engine")
                        .trim()
                        .to_string()
                } else {
                    format!(
                        "{script} failed ({}):\n{stderr}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout)
                    )
                };
                return Err((missing, why));
            }
        }
        eprintln!(
            "docker helpers: engine and stand-in images ready in {} ms",
            started.elapsed().as_millis()
        );
        Ok(())
    })
}

/// Makes sure a Docker engine answers on [`DOCKER_SOCKET`] and the stand-in
/// images exist (runs `tests/docker/ensure-dockerd.sh` then
/// `build-standins.sh`, once per process). Err says why not.
pub fn docker_ready() -> Result<(), String> {
    ready_state().clone().map_err(|(_, why)| why)
}

/// For the first line of a container test: true when Docker is ready. When no
/// engine can be had, fails under `CI=true` and elsewhere prints `SKIPPED (not
/// a pass): <why>` and returns false (the test should return). Any other
/// failure (the stand-ins do not build) panics everywhere.
pub fn docker_or_skip() -> bool {
    match ready_state() {
        Ok(()) => true,
        Err((true, why)) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("prerequisite missing under CI=true: {why}");
            }
            eprintln!("SKIPPED (not a pass): {why}");
            false
        }
        Err((false, why)) => panic!("Docker test harness failed: {why}"),
    }
}

/// Outcome of the Podman scripts (after the Docker ones, which build the
/// stand-ins), once per test process.
fn podman_state() -> &'static Result<(), (bool, String)> {
    static READY: OnceLock<Result<(), (bool, String)>> = OnceLock::new();
    READY.get_or_init(|| {
        ready_state().clone()?;
        let started = Instant::now();
        for (script, skippable_code) in [
            ("ensure-podman.sh", Some(NO_ENGINE)),
            ("load-standins.sh", None),
        ] {
            let path = repo_dir().join("tests/podman").join(script);
            let out = Command::new("bash")
                .arg(&path)
                .current_dir(repo_dir())
                .output()
                .map_err(|e| (false, format!("cannot run {}: {e}", path.display())))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprint!("{stderr}");
            if !out.status.success() {
                let missing = out.status.code().is_some() && out.status.code() == skippable_code;
                let why = if missing {
                    stderr
                        .lines()
                        .rev()
                        .find(|l| l.contains("CANNOT HAVE PODMAN"))
                        .unwrap_or("no Podman")
                        .trim()
                        .to_string()
                } else {
                    format!("{script} failed ({}):\n{stderr}", out.status)
                };
                return Err((missing, why));
            }
        }
        eprintln!(
            "docker helpers: Podman and stand-in images ready in {} ms",
            started.elapsed().as_millis()
        );
        Ok(())
    })
}

/// Like [`docker_or_skip`] for Podman: makes this test process talk to
/// rootful Podman's Docker-compatible API (every helper here, through the
/// same `docker` CLI), starting it and loading the stand-ins when needed.
pub fn podman_or_skip() -> bool {
    let chosen = *ENGINE.get_or_init(|| Engine::Podman);
    assert_eq!(
        chosen,
        Engine::Podman,
        "this test process already talks to Docker"
    );
    match podman_state() {
        Ok(()) => true,
        Err((true, why)) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("prerequisite missing under CI=true: {why}");
            }
            eprintln!("SKIPPED (not a pass): {why}");
            false
        }
        Err((false, why)) => panic!("Podman test harness failed: {why}"),
    }
}

/// Stops the Podman API service the harness started and starts it again
/// (it reads containers.conf only when it starts).
pub fn restart_podman_service() {
    let path = repo_dir().join("tests/podman/ensure-podman.sh");
    let out = Command::new("bash")
        .arg(&path)
        .arg("--restart")
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ensure-podman.sh --restart failed");
}

/// Result of a `docker` CLI run.
#[derive(Debug)]
pub struct DockerRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `docker -H unix://<socket> <args>` (the engine's socket, see
/// [`engine`]) and returns what it printed, whatever its exit status.
pub fn docker_run(args: &[&str]) -> DockerRun {
    let out = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", socket()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}"));
    DockerRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `docker <args>`; Err(stderr) when it fails, else its stdout trimmed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let r = docker_run(args);
    if r.ok {
        Ok(r.stdout.trim().to_string())
    } else {
        Err(format!("docker {args:?} failed: {}", r.stderr.trim()))
    }
}

/// Like [`docker`] but panics on failure.
pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

fn inspect(kind: &str, name: &str) -> Option<Value> {
    let r = docker_run(&[kind, "inspect", name]);
    if !r.ok {
        // Docker: "No such container"; Podman: "no such container".
        if r.stderr.to_lowercase().contains("no such") {
            return None;
        }
        panic!("docker {kind} inspect {name} failed: {}", r.stderr.trim());
    }
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("docker {kind} inspect {name}: not JSON ({e}): {}", r.stdout));
    match v {
        Value::Array(mut items) if items.len() == 1 => Some(items.remove(0)),
        other => panic!("docker {kind} inspect {name}: expected one object, got {other}"),
    }
}

/// `docker container inspect NAME` as JSON (the object, not the one-element
/// array), or None when there is no such container.
pub fn inspect_container(name: &str) -> Option<Value> {
    inspect("container", name)
}

/// `docker image inspect REF` as JSON, or None when there is no such image.
pub fn inspect_image(reference: &str) -> Option<Value> {
    inspect("image", reference)
}

/// The image ID (`sha256:...`) of an image reference; panics when absent.
pub fn image_id(reference: &str) -> String {
    let v = inspect_image(reference).unwrap_or_else(|| panic!("no image {reference}"));
    v["Id"].as_str().unwrap().to_string()
}

/// The parts of a container's `State` (and `RestartCount`) tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// created | running | restarting | exited | paused | dead | removing
    /// (Podman: stopped for exited)
    pub status: String,
    pub running: bool,
    pub restarting: bool,
    pub exit_code: i64,
    pub restart_count: i64,
    pub started_at: String,
    pub pid: i64,
}

/// The state of a container, or None when there is none by that name.
pub fn container_state(name: &str) -> Option<ContainerState> {
    let v = inspect_container(name)?;
    let s = &v["State"];
    Some(ContainerState {
        status: s["Status"].as_str().unwrap_or("").to_string(),
        running: s["Running"].as_bool().unwrap_or(false),
        restarting: s["Restarting"].as_bool().unwrap_or(false),
        exit_code: s["ExitCode"].as_i64().unwrap_or(-1),
        restart_count: v["RestartCount"].as_i64().unwrap_or(0),
        started_at: s["StartedAt"].as_str().unwrap_or("").to_string(),
        pid: s["Pid"].as_i64().unwrap_or(0),
    })
}

/// Everything a container printed, stdout then stderr (docker keeps both).
pub fn logs(name: &str) -> String {
    let r = docker_run(&["logs", name]);
    format!("{}{}", r.stdout, r.stderr)
}

/// `docker rm -f -v` each name (anonymous volumes too: the consul image has
/// `VOLUME /consul/data`); a name with no container is fine.
pub fn remove_containers(names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["rm", "-f", "-v"];
    args.extend_from_slice(names);
    let r = docker_run(&args);
    if !r.ok {
        for line in r
            .stderr
            .lines()
            .filter(|l| !l.to_lowercase().contains("no such container"))
        {
            eprintln!("docker helpers: while removing {names:?}: {line}");
        }
    }
}

/// A name no other test (or test process) uses: `<prefix><pid>-<n>-<what>`.
pub fn unique_name(prefix: &str, what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Container names a test owns; removes them all when dropped (also when the
/// test panics).
pub struct Containers {
    prefix: String,
    names: std::sync::Mutex<Vec<String>>,
}

impl Containers {
    /// Names start with `nodeprep-selftest-`; see [`Containers::with_prefix`].
    pub fn new() -> Containers {
        Containers::with_prefix("nodeprep-selftest-")
    }

    pub fn with_prefix(prefix: &str) -> Containers {
        Containers {
            prefix: prefix.to_string(),
            names: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A fresh unique name, removed on drop.
    pub fn add(&self, what: &str) -> String {
        let name = unique_name(&self.prefix, what);
        self.track(&name);
        name
    }

    /// Removes `name` on drop too (e.g. the fixed name `consul` that nodeprep
    /// creates: only when the test owns it).
    pub fn track(&self, name: &str) {
        self.names.lock().unwrap().push(name.to_string());
    }
}

impl Default for Containers {
    fn default() -> Self {
        Containers::new()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        remove_containers(&names);
    }
}

/// How a stand-in container ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It printed its `ready:` line and is running.
    Ready,
    /// It exited (not restarting) with this code.
    Exited(i64),
    /// Restart policy brought it back at least this many times without it
    /// ever getting ready (the "drift" of a broken config under `always`).
    Restarting(i64),
}

/// Polls until the container is ready (printed [`READY_MARK`] and runs),
/// exited for good, or restarted at least once; panics with its logs after
/// `timeout`.
pub fn wait_outcome(name: &str, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        let state =
            container_state(name).unwrap_or_else(|| panic!("container {name} does not exist"));
        if state.running && !state.restarting && logs(name).contains(READY_MARK) {
            return Outcome::Ready;
        }
        if state.restart_count > 0 && !logs(name).contains(READY_MARK) {
            return Outcome::Restarting(state.restart_count);
        }
        // Podman says "stopped" where Docker says "exited".
        if matches!(state.status.as_str(), "exited" | "dead" | "stopped") {
            // Docker may restart it under a restart policy: give it the
            // chance (it sets Restarting right after the exit).
            let again = container_state(name).unwrap();
            if !again.restarting && again.restart_count == state.restart_count {
                return Outcome::Exited(state.exit_code);
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "container {name}: no outcome after {timeout:?}; state {state:?}; logs:\n{}",
                logs(name)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the container to stop running and returns its exit code; panics
/// after `timeout`.
pub fn wait_for_exit(name: &str, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let state =
            container_state(name).unwrap_or_else(|| panic!("container {name} does not exist"));
        if !state.running && !state.restarting && state.status != "created" {
            return state.exit_code;
        }
        if Instant::now() >= deadline {
            panic!(
                "container {name} still running after {timeout:?}; logs:\n{}",
                logs(name)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Docker socket path where no engine answers, for the "dockerd
/// unreachable" scenario: point nodeprep's `docker.socket` setting at
/// [`DeadSocket::path`]. Keeps its temp dir alive.
pub struct DeadSocket {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// A path that does not exist (connect: ENOENT).
pub fn missing_socket() -> DeadSocket {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    DeadSocket { dir, path }
}

/// A socket file nobody listens on (connect: ECONNREFUSED), like the socket
/// a crashed dockerd leaves behind.
pub fn refusing_socket() -> DeadSocket {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    DeadSocket { dir, path }
}

/// Writes `interfaces.json` as nodeprep does (the consul stand-in requires
/// string `client_addr` and `bind_addr` there).
pub fn write_interfaces_json(config_dir: &Path, client_addr: &str, bind_addr: &str) {
    let v = serde_json::json!({ "client_addr": client_addr, "bind_addr": bind_addr });
    std::fs::write(config_dir.join("interfaces.json"), v.to_string()).unwrap();
}

/// Gives a data dir to the consul image's user as nodeprep does (mode 0750,
/// owner 100:1000), so the stand-in, running as that user, can write it.
/// Needs root; elsewhere it leaves the dir as it is.
pub fn give_to_consul_user(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let _ = std::os::unix::fs::chown(dir, Some(CONSUL_UID), Some(CONSUL_GID));
}

/// The uid and gid a container's main process runs as, from
/// `/proc/<pid>/status` on the host (the engine runs here).
pub fn container_ids(name: &str) -> (u32, u32) {
    let pid = container_state(name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status of {name}: {e}"));
    let field = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (field("Uid:"), field("Gid:"))
}

/// Polls `probe` every 50 ms until it returns Some, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
