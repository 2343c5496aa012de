//! Containers and images through the Docker Engine API (bollard) on its unix
//! socket; never the `docker` CLI. The engine is Docker or Podman (its
//! Docker-compatible API): told apart by the headers of its `GET /_ping`
//! answer (`Server: Docker/..`, or `Server: Libpod/..` with
//! `Libpod-Api-Version`), which costs a millisecond where Podman's
//! `GET /version` takes most of a second (it asks conmon and the OCI runtime
//! for theirs).
//!
//! Like `netlink`, this module owns a current-thread runtime and offers
//! blocking verbs, so the async client stays inside it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, RemoveContainerOptions, RestartContainerOptions,
};
use futures_util::StreamExt;

/// Everything nodeprep decides about a container. Its hash, stored in a
/// label, is how a later run tells whether the container is still in spec
/// (the way docker compose uses its config-hash label).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `host:container[:ro]`
    pub binds: Vec<String>,
    pub network_mode: String,
    pub restart: String,
}

pub const LABEL_MANAGED: &str = "nodeprep.managed";
pub const LABEL_HASH: &str = "nodeprep.config-hash";

impl ContainerSpec {
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_vec(self).expect("serializing plain strings");
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What nodeprep looks at in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub managed: bool,
    pub hash: Option<String>,
    pub image: String,
    pub running: bool,
    pub restarting: bool,
    pub started_at: String,
    pub restart_count: i64,
    pub exit_code: i64,
    /// The container's last lines of output when it is restarting or has
    /// exited with an error: why it stopped, in its own words (a Consul
    /// agent that refuses its configuration says which key).
    pub last_output: Option<String>,
}

/// One step of an image pull, for progress display.
#[derive(Debug, Clone)]
pub struct PullEvent {
    pub layer: Option<String>,
    pub status: String,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

/// Which engine serves the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        }
    }
}

/// The engine behind a socket, as its ping answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub kind: EngineKind,
    /// The engine's own version ("20.10.24+dfsg1", "4.3.1").
    pub version: String,
    /// The newest Docker API version it speaks ("1.41").
    pub api_version: Option<String>,
}

/// Where nodeprep looks for an engine with `docker.socket = "auto"`, in
/// order: Docker's socket, then rootful Podman's (`podman.socket`).
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// The sockets to try, each with the engine expected there (`None`: either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub sockets: Vec<PathBuf>,
    /// The engine the configuration states, if it states one.
    pub expect: Option<EngineKind>,
    /// `docker.socket = "auto"`.
    pub auto: bool,
}

impl Candidates {
    /// The sockets `docker.socket` and `docker.engine` ask for.
    pub fn new(socket: Option<&Path>, expect: Option<EngineKind>) -> Candidates {
        let sockets = match (socket, expect) {
            (Some(path), _) => vec![path.to_path_buf()],
            (None, Some(EngineKind::Docker)) => vec![DOCKER_SOCKET.into()],
            (None, Some(EngineKind::Podman)) => vec![PODMAN_SOCKET.into()],
            (None, None) => vec![DOCKER_SOCKET.into(), PODMAN_SOCKET.into()],
        };
        Candidates {
            sockets,
            expect,
            auto: socket.is_none(),
        }
    }

    fn names(&self) -> String {
        let names: Vec<String> = self
            .sockets
            .iter()
            .map(|s| s.display().to_string())
            .collect();
        names.join(" or ")
    }
}

pub struct Docker {
    rt: tokio::runtime::Runtime,
    client: bollard::Docker,
    socket: PathBuf,
    engine: Engine,
    /// How the socket was chosen ("configured", "auto: ...").
    how: String,
}

impl Docker {
    /// Connects to the engine, waiting up to `wait` for a socket to answer:
    /// the first of `candidates` that does, in order, every round.
    pub fn connect(candidates: &Candidates, wait: Duration) -> Result<Docker> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the Docker API event loop")?;
        let deadline = Instant::now() + wait;
        loop {
            let mut last = String::new();
            for socket in &candidates.sockets {
                let engine = match identify(socket, Duration::from_secs(5)) {
                    Ok(engine) => engine,
                    Err(e) => {
                        last = format!("{}: {e}", socket.display());
                        continue;
                    }
                };
                if let Some(expect) = candidates.expect.filter(|k| *k != engine.kind) {
                    return Err(anyhow!(
                        "docker.engine = \"{}\", but {} {} answers on {}",
                        expect.name().to_lowercase(),
                        engine.kind.name(),
                        engine.version,
                        socket.display()
                    ));
                }
                match rt.block_on(handshake(socket)) {
                    Ok(client) => {
                        let how = if candidates.auto && candidates.sockets.len() > 1 {
                            format!("auto: the first of {} to answer", candidates.names())
                        } else if candidates.auto {
                            "auto".to_string()
                        } else {
                            "configured".to_string()
                        };
                        return Ok(Docker {
                            rt,
                            client,
                            socket: socket.clone(),
                            engine,
                            how,
                        });
                    }
                    Err(e) => last = format!("{}: {}", socket.display(), describe(&e)),
                }
            }
            if Instant::now() >= deadline {
                let waited = if wait.is_zero() {
                    String::new()
                } else {
                    format!(" within {}s", wait.as_secs())
                };
                let hint = match candidates.expect {
                    Some(EngineKind::Docker) => "is the docker service running?",
                    Some(EngineKind::Podman) => "is podman.socket running?",
                    None => "is the docker service (or podman.socket) running?",
                };
                return Err(anyhow!(
                    "no container engine answers on {}{waited}: {last}: {hint}",
                    candidates.names()
                ));
            }
            if let Some(sig) = crate::interrupt::requested() {
                return Err(anyhow!(
                    "stopped waiting for a container engine on {}: interrupted by {sig}",
                    candidates.names()
                ));
            }
            // cloud-init can run nodeprep while dockerd is still starting.
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// "Podman 4.3.1 at /run/podman/podman.sock (auto: ...)".
    pub fn describe(&self) -> String {
        format!(
            "{} {} at {} ({})",
            self.engine.kind.name(),
            self.engine.version,
            self.socket.display(),
            self.how
        )
    }

    /// The container called `name`, or `None`.
    ///
    /// Read as plain JSON, not through bollard's typed model: Podman
    /// reports states Docker does not have (`"stopped"` for a container
    /// that exited under a restart policy), which that model refuses
    /// ("unknown variant `stopped`").
    pub fn inspect(&self, name: &str) -> Result<Option<ContainerState>> {
        let what = || format!("cannot inspect container {name}");
        let (status, body) = self.get(&format!("/containers/{name}/json")).map_err(|e| {
            anyhow!(
                "{} ({} at {}): {e}",
                what(),
                self.engine.kind.name(),
                self.socket.display()
            )
        })?;
        if status == 404 {
            return Ok(None);
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            anyhow!(
                "{}: the engine's answer is not JSON ({e}): {}",
                what(),
                String::from_utf8_lossy(&body)
            )
        })?;
        if status != 200 {
            let message = doc["message"].as_str().unwrap_or("no message");
            return Err(anyhow!(
                "{} ({} at {}): {message} (HTTP {status})",
                what(),
                self.engine.kind.name(),
                self.socket.display()
            ));
        }
        let mut state = container_state(&doc);
        if state.restarting || (!state.running && state.exit_code != 0) {
            // Best effort: the state alone is still worth reporting.
            state.last_output = self.last_output(name).ok().filter(|o| !o.is_empty());
        }
        Ok(Some(state))
    }

    /// [`Docker::inspect`], with a crash loop told from a running
    /// container. Docker backs off between restarts of a crashing container
    /// (100 ms, doubling to a minute) and reports Restarting meanwhile: a
    /// crash loop is mostly seen as restarting, rarely as running. Podman
    /// restarts it at once and never reports Restarting: it is seen running
    /// (just started) or stopped, with a climbing restart count. So a
    /// container that has restarted and is stopped or just started is
    /// looked at again after `pause`: a count that moved on is a crash
    /// loop, reported as `restarting`.
    pub fn inspect_settled(&self, name: &str, pause: Duration) -> Result<Option<ContainerState>> {
        let Some(c) = self.inspect(name)? else {
            return Ok(None);
        };
        if c.restarting || c.restart_count == 0 || (c.running && !just_started(&c.started_at)) {
            return Ok(Some(c));
        }
        std::thread::sleep(pause);
        let Some(mut again) = self.inspect(name)? else {
            return Ok(None);
        };
        if again.restart_count > c.restart_count || again.restarting {
            again.restarting = true;
            if again.last_output.is_none() {
                again.last_output = self.last_output(name).ok().filter(|o| !o.is_empty());
            }
        }
        Ok(Some(again))
    }

    /// The last lines a container wrote (stdout and stderr), at most 3 and
    /// at most 512 bytes, on one line.
    fn last_output(&self, name: &str) -> std::io::Result<String> {
        let (status, body) = self.get(&format!(
            "/containers/{name}/logs?stdout=true&stderr=true&tail=3"
        ))?;
        if status != 200 {
            return Ok(String::new());
        }
        let text = demux_log(&body);
        let joined = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        let mut end = joined.len().min(512);
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        Ok(joined[..end].to_string())
    }

    /// `GET path` on the engine's socket as HTTP/1.0: the engine answers
    /// with the whole body, unchunked, and closes. Returns the status and
    /// the body.
    fn get(&self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: nodeprep\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no HTTP header in the answer",
                )
            })?;
        let head = String::from_utf8_lossy(&answer[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad HTTP status line: {head:?}"),
                )
            })?;
        Ok((status, answer[split + 4..].to_vec()))
    }

    /// Names of the running containers nodeprep did not create (no
    /// `nodeprep.managed` label): what a dockerd restart would interrupt.
    pub fn running_foreign(&self) -> Result<Vec<String>> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(false)
            .build();
        let list = self
            .rt
            .block_on(self.client.list_containers(Some(opts)))
            .map_err(|e| self.err(e, "cannot list the running containers"))?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_none_or(|l| l.get(LABEL_MANAGED).is_none_or(|v| v != "true"))
            })
            .map(|c| {
                c.names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .or(c.id)
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Whether the engine keeps containers running while it restarts
    /// (`live-restore`).
    pub fn live_restore(&self) -> Result<bool> {
        let info = self
            .rt
            .block_on(self.client.info())
            .map_err(|e| self.err(e, "cannot read the engine's settings"))?;
        Ok(info.live_restore_enabled.unwrap_or(false))
    }

    /// Waits up to `wait` for the engine to answer again (after a restart).
    pub fn wait_ready(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            match self.rt.block_on(self.client.ping()) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.err(e, "the engine did not answer again after its restart"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    pub fn image_exists(&self, image: &str) -> Result<bool> {
        match self.rt.block_on(self.client.inspect_image(image)) {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err(e, &format!("cannot inspect image {image}"))),
        }
    }

    /// Pulls `image`, reporting each progress message to `progress`.
    pub fn pull(&self, image: &str, progress: &mut dyn FnMut(PullEvent)) -> Result<()> {
        self.rt.block_on(async {
            let opts = CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            };
            let mut stream = self.client.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                if let Some(sig) = crate::interrupt::requested() {
                    return Err(anyhow!("pull of {image} stopped: interrupted by {sig}"));
                }
                let info = item.map_err(|e| self.err(e, &format!("cannot pull image {image}")))?;
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(anyhow!(
                        "cannot pull image {image}: the registry answered: {detail}"
                    ));
                }
                progress(PullEvent {
                    layer: info.id,
                    status: info.status.unwrap_or_default(),
                    current: info.progress_detail.as_ref().and_then(|p| p.current),
                    total: info.progress_detail.as_ref().and_then(|p| p.total),
                });
            }
            Ok(())
        })
    }

    pub fn create(&self, name: &str, spec: &ContainerSpec) -> Result<()> {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_HASH.to_string(), spec.hash()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                network_mode: Some(spec.network_mode.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(restart_policy(&spec.restart)),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.create_container(Some(opts), body))
            .map_err(|e| self.err(e, &format!("cannot create container {name}")))?;
        Ok(())
    }

    pub fn start(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(self.client.start_container(name, None))
            .map_err(|e| self.err(e, &format!("cannot start container {name}")))
    }

    pub fn restart(&self, name: &str) -> Result<()> {
        let opts = RestartContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.restart_container(name, Some(opts)))
            .map_err(|e| self.err(e, &format!("cannot restart container {name}")))
    }

    /// Removes a container, stopping it first (force).
    pub fn remove(&self, name: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .rt
            .block_on(self.client.remove_container(name, Some(opts)))
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.err(e, &format!("cannot remove container {name}"))),
        }
    }

    fn err(&self, e: DockerError, what: &str) -> anyhow::Error {
        anyhow!(
            "{what} ({} at {}): {}",
            self.engine.kind.name(),
            self.socket.display(),
            describe(&e)
        )
    }
}

/// What nodeprep reads from an inspected container (either engine's JSON).
fn container_state(doc: &serde_json::Value) -> ContainerState {
    let labels = &doc["Config"]["Labels"];
    let label = |k: &str| labels[k].as_str().map(String::from);
    let state = &doc["State"];
    ContainerState {
        managed: label(LABEL_MANAGED).is_some_and(|v| v == "true"),
        hash: label(LABEL_HASH),
        image: doc["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        running: state["Running"].as_bool().unwrap_or(false),
        restarting: state["Restarting"].as_bool().unwrap_or(false),
        started_at: state["StartedAt"].as_str().unwrap_or_default().to_string(),
        restart_count: doc["RestartCount"].as_i64().unwrap_or(0),
        exit_code: state["ExitCode"].as_i64().unwrap_or(0),
        last_output: None,
    }
}

/// Whether an engine's `StartedAt` (RFC 3339, UTC) is less than 3 s ago.
fn just_started(started_at: &str) -> bool {
    humantime::parse_rfc3339_weak(started_at.trim_end_matches('Z'))
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age < Duration::from_secs(3))
}

/// The text of a log answer. Without a TTY both engines frame each chunk
/// with an 8-byte header (stream, 0, 0, 0, big-endian length); anything
/// that does not parse as frames is taken as plain text.
fn demux_log(body: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 8 && rest[0] <= 2 && rest[1..4] == [0, 0, 0] {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if rest.len() < 8 + len {
            break;
        }
        out.extend_from_slice(&rest[8..8 + len]);
        rest = &rest[8 + len..];
    }
    if !rest.is_empty() {
        if out.is_empty() {
            return String::from_utf8_lossy(body).into_owned();
        }
        out.extend_from_slice(rest);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks the engine on `socket` who it is: `GET /_ping` over the socket with
/// plain HTTP/1.1, reading the status line and headers. An engine that
/// answers anything but 200 does not count as answering.
pub fn identify(socket: &Path, timeout: Duration) -> std::io::Result<Engine> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: nodeprep\r\nConnection: close\r\n\r\n",
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_ping(&String::from_utf8_lossy(&head))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The engine a `_ping` answer's status line and headers describe.
fn parse_ping(head: &str) -> std::result::Result<Engine, String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("answered {status:?} to GET /_ping"));
    }
    let mut headers = HashMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let server = headers
        .get("server")
        .map(String::as_str)
        .unwrap_or_default();
    // "Docker/20.10.24+dfsg1 (linux)", "Libpod/4.3.1 (linux)"
    let product = |name: &str| {
        server
            .strip_prefix(name)
            .and_then(|v| v.split_whitespace().next())
            .map(String::from)
    };
    let api_version = headers.get("api-version").cloned();
    if let Some(libpod) = headers.get("libpod-api-version") {
        return Ok(Engine {
            kind: EngineKind::Podman,
            version: product("Libpod/").unwrap_or_else(|| libpod.clone()),
            api_version,
        });
    }
    if let Some(version) = product("Libpod/") {
        return Ok(Engine {
            kind: EngineKind::Podman,
            version,
            api_version,
        });
    }
    Ok(Engine {
        kind: EngineKind::Docker,
        version: product("Docker/").unwrap_or_else(|| "unknown".into()),
        api_version,
    })
}

/// Connects and pings. bollard speaks a recent API version by default; an
/// older engine (Debian bookworm's docker.io 20.10 speaks 1.41) answers
/// HTTP 400 "client version X is too new. Maximum supported API version is
/// Y", so the client steps down to Y and pings again. This costs a ping,
/// where bollard's negotiate_version costs a /version call that takes
/// 20-30 ms on such engines (it asks containerd and runc for theirs).
async fn handshake(socket: &Path) -> Result<bollard::Docker, DockerError> {
    let connect = |version: &bollard::ClientVersion| {
        bollard::Docker::connect_with_unix(&socket.to_string_lossy(), 30, version)
    };
    let client = connect(bollard::API_DEFAULT_VERSION)?;
    match client.ping().await {
        Ok(_) => Ok(client),
        Err(e) => match status(&e)
            .filter(|&s| s == 400)
            .and_then(|_| max_api_version(&e))
        {
            Some(version) => {
                let client = connect(&version)?;
                client.ping().await?;
                Ok(client)
            }
            None => Err(e),
        },
    }
}

/// The version in "... Maximum supported API version is 1.41".
fn max_api_version(e: &DockerError) -> Option<bollard::ClientVersion> {
    let DockerError::DockerResponseServerError { message, .. } = e else {
        return None;
    };
    let tail = message.rsplit("API version is ").next()?;
    let (major, minor) = tail.trim().trim_end_matches('.').split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

fn restart_policy(name: &str) -> RestartPolicyNameEnum {
    match name {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    }
}

fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message for API errors (e.g. a name conflict), or the
/// transport error.
fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        DockerError::SocketNotFoundError(path) => format!("no socket at {path}"),
        other => other.to_string(),
    }
}

/// When the running dockerd started, as time since boot, from its pid file
/// and the kernel's process table: a `daemon.json` changed after that is not
/// in effect yet. `None` when no dockerd runs (or the pid file is stale).
///
/// Since boot, not wall-clock time: the kernel keeps a process's start in
/// clock ticks since boot, and turning that into a date through `btime`
/// (whole seconds) could put it up to a second early, before a file written
/// just ahead of the restart.
pub fn daemon_started(pidfile: &Path) -> Option<Duration> {
    let pid = std::fs::read_to_string(pidfile).ok()?;
    process_started(pid.trim().parse().ok()?)
}

/// When process `pid` started, as time since boot, from the kernel's
/// process table.
pub fn process_started(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime, in clock ticks since boot) comes after the
    // command in parentheses, which may itself hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)? as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// A wall-clock time (a file's mtime) as time since boot, to compare with
/// [`daemon_started`]; `None` for a time before the boot.
pub fn since_boot(t: std::time::SystemTime) -> Option<Duration> {
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let boot = Duration::new(boot.tv_sec() as u64, boot.tv_nsec() as u32);
    let age = std::time::SystemTime::now()
        .duration_since(t)
        .unwrap_or_default();
    boot.checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_start_times_are_read_to_the_second() {
        assert!(!just_started("2020-01-01T00:00:00.123456789Z"));
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        assert!(just_started(&now));
    }

    #[test]
    fn log_frames_are_joined_and_plain_text_is_kept() {
        let mut framed = vec![2, 0, 0, 0, 0, 0, 0, 6];
        framed.extend_from_slice(b"error ");
        framed.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 2]);
        framed.extend_from_slice(b"x\n");
        assert_eq!(demux_log(&framed), "error x\n");
        assert_eq!(demux_log(b"plain line\n"), "plain line\n");
        assert_eq!(demux_log(b""), "");
    }

    #[test]
    fn reads_the_engine_maximum_from_a_too_new_error() {
        let e = DockerError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.52 is too new. Maximum supported API version is 1.41".into(),
        };
        let v = max_api_version(&e).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let other = DockerError::DockerResponseServerError {
            status_code: 400,
            message: "bad request".into(),
        };
        assert!(max_api_version(&other).is_none());
    }

    #[test]
    fn ping_headers_tell_docker_from_podman() {
        // As dockerd 20.10 (bookworm's docker.io) and Podman 4.3 answer.
        let docker = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nContent-Length: 2\r\n\r\nOK";
        assert_eq!(
            parse_ping(docker).unwrap(),
            Engine {
                kind: EngineKind::Docker,
                version: "20.10.24+dfsg1".into(),
                api_version: Some("1.41".into())
            }
        );
        let podman = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nLibpod-Api-Version: 4.3.1\r\nLibpod-Buildah-Version: 1.28.2\r\nServer: Libpod/4.3.1 (linux)\r\n\r\n";
        let e = parse_ping(podman).unwrap();
        assert_eq!((e.kind, e.version.as_str()), (EngineKind::Podman, "4.3.1"));
        assert!(parse_ping("HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_ping("").is_err());
    }

    #[test]
    fn inspect_reads_podman_states_docker_has_not() {
        // Podman 4.3's answer for a container that exited under restart
        // policy `always` (abridged).
        let doc = serde_json::json!({
            "State": {"Status": "stopped", "Running": false, "Restarting": false,
                      "ExitCode": 2, "StartedAt": "2026-11-29T23:46:51.561509805Z"},
            "RestartCount": 8,
            "Config": {"Image": "localhost/nodeprep-test/registrator-standin:1",
                       "Labels": {"nodeprep.managed": "true", "nodeprep.config-hash": "abc"}}
        });
        let c = container_state(&doc);
        assert!(c.managed && !c.running && !c.restarting);
        assert_eq!((c.exit_code, c.restart_count), (2, 8));
        assert_eq!(c.hash.as_deref(), Some("abc"));
        let bare = container_state(&serde_json::json!({"Config": {"Labels": null}}));
        assert!(!bare.managed && bare.hash.is_none());
    }

    #[test]
    fn auto_tries_docker_then_podman_unless_told() {
        let c = Candidates::new(None, None);
        assert_eq!(
            c.sockets,
            [PathBuf::from(DOCKER_SOCKET), PathBuf::from(PODMAN_SOCKET)]
        );
        assert_eq!(
            Candidates::new(None, Some(EngineKind::Podman)).sockets,
            [PathBuf::from(PODMAN_SOCKET)]
        );
        let c = Candidates::new(Some(Path::new("/x.sock")), Some(EngineKind::Docker));
        assert_eq!((c.sockets.len(), c.auto), (1, false));
    }

    #[test]
    fn spec_hash_is_stable() {
        let spec = ContainerSpec {
            image: "a:1".into(),
            cmd: vec!["x".into()],
            env: vec![],
            binds: vec![],
            network_mode: "host".into(),
            restart: "always".into(),
        };
        // A changed hash function would recreate every container on upgrade.
        // sha256 of {"image":"a:1","cmd":["x"],"env":[],"binds":[],"network_mode":"host","restart":"always"}
        assert_eq!(
            spec.hash(),
            "6d0a395879b9229c261c83090be02fb4df1c6423bb32fd4015edc035a86576c1"
        );
    }
}
