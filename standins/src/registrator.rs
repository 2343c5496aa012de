//! The registrator STAND-IN (`registrator-standin`). It is NOT registrator,
//! but behaves like gliderlabs/registrator v7 (tag v7, commit
//! 8bed3a616acb83b1d2145f90e338f9da3d0b42f2) where nodeprep depends on it,
//! modelled on `registrator.go`, `bridge/bridge.go`, `bridge/util.go` and
//! `consul/consul.go` of that tag:
//!
//! 1. the command line parses like v7's Go `flag` parsing: options first,
//!    then exactly one registry URI; an unknown option, a missing URI or an
//!    option after the URI: usage error, exit 2 (v7's messages);
//! 2. v7's own checks (`log.Fatal`, exit 1): `-ttl`/`-ttl-refresh` together,
//!    `-retry-interval` > 0, `-deregister` `always` or `on-success`; the URI's
//!    scheme must be `consul://` (the only adapter modelled); plus the
//!    stand-in's check of nodeprep's usage: `-ip <IPv4>` is given
//!    (registrator itself does not require it, but without it it registers
//!    whatever the hostname resolves to, so nodeprep always passes it);
//! 3. the Docker API answers on `/tmp/docker.sock` (`DOCKER_HOST=unix://...`
//!    overrides, as in v7) with `GET /_ping`; else exit 1;
//! 4. like v7, it pings the registry: `GET /v1/status/leader` on the URI's
//!    host:port (consul.go `Ping`), `Connecting to backend (n/retries)`
//!    before each try, `-retry-attempts` (default 0: one try; -1: forever)
//!    spaced by `-retry-interval` ms (default 2000); the last failure is
//!    fatal, exit 1, with the HTTP client's error (`Get
//!    "http://169.254.1.1:8500/v1/status/leader": dial tcp ...: connect:
//!    connection refused`). An empty leader is fine (v7 only logs it);
//! 5. it opens the Docker event stream, then registers every running
//!    container's ports (`Sync`), prints `ready:`, and from then on registers
//!    on `start` and deregisters on `die` (`-deregister=on-success`: only
//!    after exit code 0 or a signal), with `-resync=N` re-registering every
//!    N seconds; [`bridge`] says which services a container gets. A lost
//!    event stream is fatal (exit 1), as in v7.
//!
//! Not modelled: `-cleanup` (accepted, does nothing), `-ttl`/`-ttl-refresh`
//! (checked, then ignored: v7's consul adapter refreshes nothing either),
//! the other registry adapters, the TCP `DOCKER_HOST`, resolving the
//! hostname when a port is bound to 0.0.0.0 without `-ip`.

pub mod bridge;
pub mod docker;

use crate::{signals, split_flag, Banner, Exit};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BANNER: Banner = Banner("registrator-standin (test stand-in, NOT registrator)");

/// Where the real image's registrator looks for the Docker API by default.
pub const DOCKER_SOCKET: &str = "/tmp/docker.sock";

/// gliderlabs/registrator v7's flags (registrator.go): (name, takes a
/// value).
const FLAGS: &[(&str, bool)] = &[
    ("ip", true),
    ("internal", false),
    ("ttl-refresh", true),
    ("ttl", true),
    ("tags", true),
    ("resync", true),
    ("deregister", true),
    ("retry-attempts", true),
    ("retry-interval", true),
    ("cleanup", false),
];

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub ip: Option<String>,
    pub uri: String,
    /// Every option before the URI, as given.
    pub options: Vec<String>,
    pub internal: bool,
    pub tags: String,
    pub ttl: i64,
    pub ttl_refresh: i64,
    pub resync: i64,
    pub deregister: String,
    pub retry_attempts: i64,
    pub retry_interval: i64,
    pub cleanup: bool,
}

fn usage(why: String) -> Exit {
    Exit::usage(format!(
        "{why} (usage: registrator [options] <registry URI>; the stand-in knows registrator v7's options)"
    ))
}

pub fn parse(args: &[String]) -> Result<Args, Exit> {
    let mut a = Args {
        ip: None,
        uri: String::new(),
        options: Vec::new(),
        internal: false,
        tags: String::new(),
        ttl: 0,
        ttl_refresh: 0,
        resync: 0,
        deregister: "always".into(),
        retry_attempts: 0,
        retry_interval: 2000,
        cleanup: false,
    };
    let mut i = 0;
    // Go's flag package: parse options until the first non-option or `--`.
    while i < args.len() {
        if args[i] == "--" {
            i += 1;
            break;
        }
        let Some((name, inline)) = split_flag(&args[i]) else {
            break;
        };
        let Some(&(_, takes_value)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(usage(format!("flag provided but not defined: -{name}")));
        };
        let value = if takes_value && inline.is_none() {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| usage(format!("flag needs an argument: -{name}")))?
        } else {
            inline.unwrap_or("true").to_string()
        };
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| usage(format!("invalid value {v:?} for flag -{name}: parse error")))
        };
        let boolean = |v: &str| match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(usage(format!(
                "invalid boolean value {v:?} for -{name}: parse error"
            ))),
        };
        match name {
            "ip" => a.ip = Some(value),
            "internal" => a.internal = boolean(&value)?,
            "cleanup" => a.cleanup = boolean(&value)?,
            "tags" => a.tags = value,
            "deregister" => a.deregister = value,
            "ttl" => a.ttl = int(&value)?,
            "ttl-refresh" => a.ttl_refresh = int(&value)?,
            "resync" => a.resync = int(&value)?,
            "retry-attempts" => a.retry_attempts = int(&value)?,
            "retry-interval" => a.retry_interval = int(&value)?,
            _ => unreachable!(),
        }
        i += 1;
    }
    a.options = args[..i].to_vec();
    match &args[i..] {
        [] => {
            return Err(usage(format!(
                "Missing required argument for registry URI. (args: {args:?})"
            )))
        }
        [uri] => a.uri = uri.clone(),
        [_, extra @ ..] => {
            return Err(usage(format!(
                "Extra unparsed arguments: {} Options should come before the registry URI argument. (args: {args:?})",
                extra.join(" ")
            )))
        }
    }
    Ok(a)
}

/// The consul adapter's address (`host:port` of the URI; the consul API
/// client's port 80 when it names none).
pub fn consul_address(uri: &str) -> Result<String, Exit> {
    let rest = uri.strip_prefix("consul://").ok_or_else(|| {
        Exit::env(format!(
            "unrecognized adapter: {uri} (the stand-in models registrator's consul:// adapter only)"
        ))
    })?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(Exit::env(format!("bad adapter uri: {uri} (no host)")));
    }
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':'),
        None => false,
    };
    Ok(if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

/// v7's checks of the options (registrator.go, before it connects).
pub fn check_options(a: &Args) -> Result<(), Exit> {
    let fatal = |m: &str| Err(Exit::env(m.to_string()));
    if (a.ttl == 0 && a.ttl_refresh > 0) || (a.ttl > 0 && a.ttl_refresh == 0) {
        return fatal("-ttl and -ttl-refresh must be specified together or not at all");
    }
    if a.ttl > 0 && a.ttl <= a.ttl_refresh {
        return fatal("-ttl must be greater than -ttl-refresh");
    }
    if a.retry_interval <= 0 {
        return fatal("-retry-interval must be greater than 0");
    }
    if a.deregister != "always" && a.deregister != "on-success" {
        return fatal("-deregister must be \"always\" or \"on-success\"");
    }
    consul_address(&a.uri)?;
    match &a.ip {
        None => Err(Exit::env(
            "-ip <IPv4> is missing before the registry URI (without it registrator registers \
             whatever the hostname resolves to)",
        )),
        Some(ip) => ip
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| Exit::env(format!("-ip {ip:?} is not an IPv4 address"))),
    }
}

/// The Docker socket: `/tmp/docker.sock`, or `DOCKER_HOST=unix://PATH`.
pub fn docker_socket() -> Result<PathBuf, Exit> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h.strip_prefix("unix://").map(PathBuf::from).ok_or_else(|| {
            Exit::env(format!(
                "DOCKER_HOST={h}: the stand-in reaches the engine through a unix socket only"
            ))
        }),
        _ => Ok(PathBuf::from(DOCKER_SOCKET)),
    }
}

fn check_docker(path: &Path) -> Result<docker::Docker, Exit> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Exit::env(format!(
            "{}: {e} (bind-mount the host's /var/run/docker.sock there)",
            path.display()
        ))
    })?;
    if !meta.file_type().is_socket() {
        return Err(Exit::env(format!(
            "{} exists but is not a socket (bind-mount the host's /var/run/docker.sock there)",
            path.display()
        )));
    }
    let d = docker::Docker::new(path);
    d.ping()
        .map_err(|e| Exit::env(format!("Docker API on {}: {e}", path.display())))?;
    Ok(d)
}

/// The registry as v7's consul adapter uses it (HTTP on `addr`).
#[derive(Debug, Clone)]
pub struct Consul {
    pub addr: String,
}

impl Consul {
    /// One request; (status, body). Errors read like Go's HTTP client's.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let url = format!("http://{}{path}", self.addr);
        let verb = if method == "GET" { "Get" } else { "Put" };
        let fail = |e: std::io::Error| format!("{verb} \"{url}\": {e}");
        let sock = self
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("{verb} \"{url}\": dial tcp: lookup {}: {e}", self.addr))?
            .next()
            .ok_or_else(|| format!("{verb} \"{url}\": dial tcp: no address"))?;
        let mut c = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(|e| {
            format!(
                "{verb} \"{url}\": dial tcp {sock}: connect: {}",
                io_text(&e)
            )
        })?;
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // One write: a server may answer (and close) after the first packet.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: registrator-standin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        c.write_all(request.as_bytes()).map_err(fail)?;
        let mut text = Vec::new();
        c.read_to_end(&mut text).map_err(fail)?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{verb} \"{url}\": malformed HTTP response {head:?}"))?;
        Ok((status, rest.to_string()))
    }

    fn expect_200(&self, method: &str, path: &str, body: Option<&Value>) -> Result<String, String> {
        let (status, text) = self.call(method, path, body)?;
        if status != 200 {
            return Err(format!(
                "Unexpected response code: {status} ({})",
                text.trim()
            ));
        }
        Ok(text)
    }

    /// consul.go `Ping`: the leader (an empty one is fine).
    pub fn ping(&self) -> Result<String, String> {
        let body = self.expect_200("GET", "/v1/status/leader", None)?;
        serde_json::from_str::<String>(&body).map_err(|e| format!("decoding the leader: {e}"))
    }

    pub fn register(&self, s: &bridge::Service) -> Result<(), String> {
        self.expect_200(
            "PUT",
            "/v1/agent/service/register",
            Some(&bridge::registration(s)),
        )
        .map(|_| ())
    }

    pub fn deregister(&self, s: &bridge::Service) -> Result<(), String> {
        let id: String =
            s.id.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
        self.expect_200("PUT", &format!("/v1/agent/service/deregister/{id}"), None)
            .map(|_| ())
    }
}

/// Go's text for common connect errors (`connection refused`...).
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".into(),
        _ => {
            let t = e.to_string();
            // "Network is unreachable (os error 101)" -> "network is unreachable"
            let t = t.split(" (os error").next().unwrap_or(&t).to_string();
            let mut c = t.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => t,
            }
        }
    }
}

fn say(line: impl std::fmt::Display) {
    println!("{BANNER}: {line}");
}

/// registrator's bridge: what it registered, per container.
pub struct Bridge {
    pub docker: docker::Docker,
    pub consul: Consul,
    pub cfg: bridge::Config,
    pub deregister: String,
    services: Mutex<BTreeMap<String, Vec<bridge::Service>>>,
}

impl Bridge {
    pub fn new(
        docker: docker::Docker,
        consul: Consul,
        cfg: bridge::Config,
        deregister: &str,
    ) -> Bridge {
        Bridge {
            docker,
            consul,
            cfg,
            deregister: deregister.to_string(),
            services: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<bridge::Service>>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The services registered for each container ID.
    pub fn registered(&self) -> BTreeMap<String, Vec<bridge::Service>> {
        self.lock().clone()
    }

    /// bridge.go `add`.
    pub fn add(&self, id: &str) {
        let short = &id[..id.len().min(12)];
        if self.lock().contains_key(id) {
            say(format_args!("container, {short}, already exists, ignoring"));
            return;
        }
        let container = match self.docker.inspect(id) {
            Ok(Some(c)) => c,
            Ok(None) => {
                say(format_args!(
                    "unable to inspect container: {short} no such container"
                ));
                return;
            }
            Err(e) => {
                say(format_args!("unable to inspect container: {short} {e}"));
                return;
            }
        };
        let (services, log) = bridge::services(&container, &self.cfg);
        for l in log {
            say(l);
        }
        let full = container["Id"].as_str().unwrap_or(id).to_string();
        for s in services {
            match self.consul.register(&s) {
                Ok(()) => {
                    say(format_args!("added: {short} {}", s.id));
                    self.lock().entry(full.clone()).or_default().push(s);
                }
                Err(e) => say(format_args!("register failed: {} {e}", s.id)),
            }
        }
    }

    /// bridge.go `RemoveOnExit` (after a `die` event).
    pub fn remove_on_exit(&self, id: &str) {
        if self.should_remove(id) {
            self.remove(id);
        } else {
            self.lock().remove(id);
        }
    }

    fn remove(&self, id: &str) {
        let short = &id[..id.len().min(12)];
        let key = self
            .lock()
            .keys()
            .find(|k| k.starts_with(id) || id.starts_with(k.as_str()))
            .cloned();
        let Some(key) = key else { return };
        let services = self.lock().remove(&key).unwrap_or_default();
        for s in services {
            match self.consul.deregister(&s) {
                Ok(()) => say(format_args!("removed: {short} {}", s.id)),
                Err(e) => say(format_args!("deregister failed: {} {e}", s.id)),
            }
        }
    }

    /// bridge.go `shouldRemove`.
    fn should_remove(&self, id: &str) -> bool {
        if self.deregister == "always" {
            return true;
        }
        match self.docker.inspect(id) {
            Ok(None) => true,
            Err(e) => {
                say(format_args!(
                    "registrator: error fetching status for container {id} on \"die\" event: {e}"
                ));
                false
            }
            Ok(Some(c)) => {
                if c["State"]["Running"].as_bool() == Some(true) {
                    return false;
                }
                let code = c["State"]["ExitCode"].as_i64().unwrap_or(1);
                code == 0 || code & 128 == 128
            }
        }
    }

    /// bridge.go `Sync`: every running container; already known ones are
    /// registered again.
    pub fn sync(&self, quiet: bool) -> Result<(), String> {
        let ids = match self.docker.list_containers() {
            Ok(ids) => ids,
            Err(e) if quiet => {
                say(format_args!(
                    "error listing containers, skipping sync ({e})"
                ));
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        say(format_args!("Syncing services on {} containers", ids.len()));
        for id in ids {
            let known = self.lock().get(&id).cloned();
            match known {
                None => self.add(&id),
                Some(services) => {
                    for s in services {
                        if let Err(e) = self.consul.register(&s) {
                            say(format_args!("sync register failed: {} {e}", s.id));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The kernel's hostname (Go's `os.Hostname` on Linux).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Checks the arguments' meaning and the Docker socket.
pub fn prepare(args: &Args) -> Result<docker::Docker, Exit> {
    check_options(args)?;
    check_docker(&docker_socket()?)
}

/// Pings the registry as v7 does (retry loop); the leader it named.
pub fn connect(consul: &Consul, args: &Args) -> Result<String, Exit> {
    let mut attempt: i64 = 0;
    loop {
        say(format_args!(
            "Connecting to backend ({attempt}/{})",
            args.retry_attempts
        ));
        match consul.ping() {
            Ok(leader) => {
                say(format_args!("consul: current leader  {leader}"));
                return Ok(leader);
            }
            Err(e) if args.retry_attempts != -1 && attempt >= args.retry_attempts => {
                return Err(Exit::env(e));
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(args.retry_interval as u64));
        attempt += 1;
    }
}

/// Opens the event stream, registers what runs, then follows the events on
/// a thread (a lost stream ends the process with exit 1, as in v7).
pub fn serve(args: &Args, docker: docker::Docker, consul: Consul) -> Result<Arc<Bridge>, Exit> {
    let cfg = bridge::Config {
        host_ip: args.ip.clone().unwrap_or_default(),
        internal: args.internal,
        force_tags: args.tags.clone(),
        hostname: hostname(),
    };
    let bridge = Arc::new(Bridge::new(docker.clone(), consul, cfg, &args.deregister));
    // Start the event listener before listing containers (v7's order).
    let mut events = docker
        .events()
        .map_err(|e| Exit::env(format!("cannot listen for Docker events: {e}")))?;
    say("Listening for Docker events ...");
    bridge.sync(false).map_err(Exit::env)?;
    let b = bridge.clone();
    std::thread::spawn(move || loop {
        match events.next_event() {
            Ok(Some(e)) => {
                let b = b.clone();
                match e.status.as_str() {
                    "start" => {
                        std::thread::spawn(move || b.add(&e.id));
                    }
                    "die" => {
                        std::thread::spawn(move || b.remove_on_exit(&e.id));
                    }
                    _ => {}
                }
            }
            Ok(None) | Err(_) => {
                eprintln!("{BANNER}: error: Docker event loop closed");
                std::process::exit(1);
            }
        }
    });
    if args.resync > 0 {
        let b = bridge.clone();
        let every = Duration::from_secs(args.resync as u64);
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let _ = b.sync(true);
        });
    }
    Ok(bridge)
}

/// The whole program: parse, check, connect, serve, print `ready:`, wait
/// for SIGTERM.
pub fn run(args: &[String]) -> Result<(), Exit> {
    println!("{BANNER}: starting with args {args:?}");
    let parsed = parse(args)?;
    let docker = prepare(&parsed)?;
    say(format_args!(
        "Forcing host IP to {}",
        parsed.ip.as_deref().unwrap_or("")
    ));
    say(format_args!("Using consul adapter: {}", parsed.uri));
    let consul = Consul {
        addr: consul_address(&parsed.uri)?,
    };
    let leader = connect(&consul, &parsed)?;
    let bridge = serve(&parsed, docker, consul)?;
    let count: usize = bridge.registered().values().map(Vec::len).sum();
    println!(
        "{BANNER}: ready: ip={} registry={} options={:?} docker={} (_ping OK) leader={leader:?} registered={count}",
        parsed.ip.as_deref().unwrap_or(""),
        parsed.uri,
        parsed.options,
        bridge.docker.socket.display(),
    );
    signals::wait();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_then_one_uri() {
        let a = parse(&s(&[
            "-ip",
            "192.0.2.10",
            "-resync=30",
            "-cleanup",
            "-internal=false",
            "-retry-attempts",
            "-1",
            "consul://169.254.1.1:8500",
        ]))
        .unwrap();
        assert_eq!(a.ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(a.uri, "consul://169.254.1.1:8500");
        assert_eq!(
            (a.resync, a.cleanup, a.internal, a.retry_attempts),
            (30, true, false, -1)
        );
        let a = parse(&s(&["--ip=192.0.2.10", "consul://x"])).unwrap();
        assert_eq!(a.ip.as_deref(), Some("192.0.2.10"));
        assert_eq!((a.deregister.as_str(), a.retry_interval), ("always", 2000));
    }

    #[test]
    fn misplaced_or_missing() {
        let e = parse(&s(&["consul://x", "-ip", "192.0.2.10"])).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .contains("Extra unparsed arguments: -ip 192.0.2.10"),
            "{}",
            e.message
        );
        let e = parse(&s(&["-ip", "192.0.2.10"])).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .contains("Missing required argument for registry URI"),
            "{}",
            e.message
        );
        // v7 has neither (later versions added them).
        for flag in ["-bogus", "-explicit", "-useIpFromLabel=x"] {
            let e = parse(&s(&[flag, "consul://x"])).unwrap_err();
            assert_eq!(e.code, 2, "{flag}");
            assert!(
                e.message.contains("flag provided but not defined"),
                "{}",
                e.message
            );
        }
        assert_eq!(parse(&s(&["-ip"])).unwrap_err().code, 2);
        assert_eq!(
            parse(&s(&["-resync=soon", "consul://x"])).unwrap_err().code,
            2
        );
    }

    #[test]
    fn meaning() {
        let check = |args: &[&str]| check_options(&parse(&s(args)).unwrap()).unwrap_err();
        let e = check(&["-ip", "192.0.2.10", "etcd://x"]);
        assert_eq!(e.code, 1);
        assert!(
            e.message.contains("unrecognized adapter: etcd://x"),
            "{}",
            e.message
        );
        assert!(check(&["consul://x"])
            .message
            .contains("-ip <IPv4> is missing"));
        assert!(check(&["-ip", "2001:db8::1", "consul://x"])
            .message
            .contains("not an IPv4"));
        assert_eq!(
            check(&["-ip", "1.2.3.4", "-ttl=30", "consul://x"]).message,
            "-ttl and -ttl-refresh must be specified together or not at all"
        );
        assert_eq!(
            check(&["-ip", "1.2.3.4", "-ttl=30", "-ttl-refresh=30", "consul://x"]).message,
            "-ttl must be greater than -ttl-refresh"
        );
        assert_eq!(
            check(&["-ip", "1.2.3.4", "-retry-interval=0", "consul://x"]).message,
            "-retry-interval must be greater than 0"
        );
        assert_eq!(
            check(&["-ip", "1.2.3.4", "-deregister=never", "consul://x"]).message,
            "-deregister must be \"always\" or \"on-success\""
        );
        assert_eq!(
            consul_address("consul://169.254.1.1:8500").unwrap(),
            "169.254.1.1:8500"
        );
        assert_eq!(consul_address("consul://agent").unwrap(), "agent:80");
        assert_eq!(
            consul_address("consul://[::1]:8500/x").unwrap(),
            "[::1]:8500"
        );
    }

    /// A tiny HTTP server on loopback answering every request with `reply`;
    /// returns its address and the requests it saw.
    fn server(reply: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                c.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut buf = vec![0; 65536];
                let n = c.read(&mut buf).unwrap_or(0);
                s.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        (addr, seen)
    }

    #[test]
    fn pings_and_registers_like_the_consul_adapter() {
        let (addr, seen) = server("\"192.0.2.10:8300\"");
        let c = Consul { addr: addr.clone() };
        assert_eq!(c.ping().unwrap(), "192.0.2.10:8300");
        let svc = bridge::Service {
            id: "host-a:web-1:8080".into(),
            name: "web".into(),
            port: 18080,
            ip: "192.0.2.10".into(),
            tags: vec![],
            attrs: BTreeMap::new(),
            origin: bridge::ServicePort {
                host_port: "18080".into(),
                host_ip: String::new(),
                exposed_port: "8080".into(),
                exposed_ip: String::new(),
                port_type: "tcp".into(),
                container_id: "x".into(),
            },
        };
        c.register(&svc).unwrap();
        c.deregister(&svc).unwrap();
        let seen = seen.lock().unwrap();
        assert!(
            seen[0].starts_with("GET /v1/status/leader HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[1].starts_with("PUT /v1/agent/service/register HTTP/1.1\r\n"),
            "{}",
            seen[1]
        );
        let body: Value = serde_json::from_str(seen[1].split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["ID"], "host-a:web-1:8080");
        assert_eq!(body["Port"], 18080);
        assert!(
            seen[2].starts_with("PUT /v1/agent/service/deregister/host-a:web-1:8080 HTTP/1.1"),
            "{}",
            seen[2]
        );
    }

    #[test]
    fn an_unanswered_ping_is_fatal_after_the_retries() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = unused.local_addr().unwrap().to_string();
        drop(unused);
        let c = Consul { addr: addr.clone() };
        let mut a = parse(&s(&[
            "-ip",
            "1.2.3.4",
            "-retry-attempts=2",
            "-retry-interval=10",
            "consul://x",
        ]))
        .unwrap();
        let t = std::time::Instant::now();
        let e = connect(&c, &a).unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "two retries spaced 10 ms"
        );
        assert_eq!(e.code, 1);
        assert_eq!(
            e.message,
            format!("Get \"http://{addr}/v1/status/leader\": dial tcp {addr}: connect: connection refused")
        );
        a.retry_attempts = 0;
        assert!(connect(&c, &a).is_err());
        // An empty leader is no error (v7 logs it and goes on).
        let (addr, _) = server("\"\"");
        assert_eq!(connect(&Consul { addr }, &a).unwrap(), "");
        let (addr, _) = server("not json");
        assert!(Consul { addr }.ping().is_err());
    }
}
