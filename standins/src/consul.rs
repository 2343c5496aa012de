//! The Consul agent STAND-IN (`consul-standin`). It is NOT Consul: it runs no
//! Raft and no gossip. It checks what the real `hashicorp/consul` image
//! would check of nodeprep's setup, then serves a one-node catalog until
//! SIGTERM:
//!
//! 1. the command is `agent` (anything else: exit 2), without `-dev` (the
//!    image's default CMD is a dev server; nodeprep must always pass its own
//!    agent command: exit 2);
//! 2. [`config`]: the config dir (default `/consul/config`, `-config-dir`
//!    overrides, as the real image's entrypoint passes
//!    `-config-dir=/consul/config`) is read like Consul reads it: every
//!    `*.json` file in lexical order, then each `-config-file`; a file that
//!    cannot be read, is not a JSON object, has a key Consul 1.20 does not
//!    know or a value of the wrong type: exit 1 with Consul's message. The
//!    stand-in also requires nodeprep's `interfaces.json` with string
//!    `client_addr` and `bind_addr` (space-separated IP addresses, one for
//!    bind_addr, or a go-sockaddr template, accepted unchecked);
//! 3. Consul's semantic checks that matter to nodeprep
//!    (`agent/config/builder.go`, `builder.validate`): `'bootstrap_expect >
//!    0' requires 'server = true'`, `bootstrap_expect cannot be N. Must be
//!    greater than or equal to zero`, `'bootstrap = true' requires 'server =
//!    true'`, `'bootstrap_expect > 0' and 'bootstrap = true' are mutually
//!    exclusive`, `encrypt has invalid key: illegal base64 data at input
//!    byte N`, and memberlist's `key size must be 16, 24 or 32 bytes`: exit 1;
//! 4. the data dir (default `/consul/data`, `-data-dir` overrides) can be
//!    written: it writes `node-id` there (kept if it holds a UUID already, like
//!    the real agent; rewritten through a temp file either way); else exit 1.
//!    In its image the stand-in runs as uid 100, gid 1000 (the real image's
//!    `consul` user), so unreadable config files and a data dir it cannot
//!    write fail the way they fail the real agent;
//! 5. [`serve`]: on EVERY client address (`client_addr`, `-client`
//!    overrides; `0.0.0.0` is the wildcard, anything else is bound as given)
//!    it listens for HTTP on the HTTP port and for DNS over UDP on the DNS
//!    port; a bind that fails (the address is on no interface, the port is
//!    taken) or a template client_addr: exit 1. The `ready:` line comes only
//!    once all are bound and names them.
//!
//! What it answers: [`api`] (HTTP) and [`dns`]. Who leads: [`api::Leader`].
//! A server with `bootstrap_expect = 1` (or `bootstrap = true`) leads
//! itself from the start. A client "joins" by polling, once a second, the
//! HTTP API of every literal IP address in `retry_join` (on this agent's own
//! HTTP port: real Consul joins over Serf on 8301, which the stand-in does
//! not speak): the first that answers `/v1/status/leader` with a leader
//! becomes its leader, and that server's `consul` instances its own. Host
//! names and cloud auto-join strings in `retry_join` are never looked up.
//! The client connects to every such address: give it only loopback or
//! network-namespace addresses in tests.
//!
//! Settings, each flag overriding the merged config files as in the real
//! agent:
//!
//! | setting | flag | config key | default |
//! |---|---|---|---|
//! | HTTP port | `-http-port` | `ports.http` | 8500 |
//! | DNS port | `-dns-port` | `ports.dns` | 8600 |
//! | node name | `-node` | `node_name` | the hostname |
//! | datacenter | `-datacenter` | `datacenter` | `dc1` |
//! | DNS domain | `-domain` | `domain` | `consul` |
//! | server | `-server` | `server` | false |
//! | bootstrap_expect | `-bootstrap-expect` | `bootstrap_expect` | 0 |
//! | retry_join | `-retry-join` (repeatable, before the files') | `retry_join` | none |
//!
//! Test knobs (no real agent has them): `-record=<file>` appends one JSON line
//! per HTTP request and DNS query; `-hang` accepts connections and reads
//! requests and queries but never answers (probe-timeout tests).
//!
//! Exit 1 under restart policy `always` makes the container restart over and
//! over, so a broken config shows as drift (RestartCount grows).

pub mod api;
pub mod config;
pub mod dns;
pub mod http;
pub mod server;

use crate::{signals, split_flag, Banner, Exit};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const BANNER: Banner = Banner("consul-standin (test stand-in, NOT Consul)");

/// Fixed paths of the real image (its entrypoint passes them as flags).
pub const DEFAULT_CONFIG_DIR: &str = "/consul/config";
pub const DEFAULT_DATA_DIR: &str = "/consul/data";
/// The one config file nodeprep writes and the stand-in requires.
pub const INTERFACES_FILE: &str = "interfaces.json";
pub const DEFAULT_HTTP_PORT: u16 = 8500;
pub const DEFAULT_DNS_PORT: u16 = 8600;
pub const DEFAULT_DATACENTER: &str = "dc1";
pub const DEFAULT_DOMAIN: &str = "consul";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub config_files: Vec<PathBuf>,
    /// `-client` / `-bind` given on the command line: they override the
    /// config files, as in the real agent.
    pub client: Option<String>,
    pub bind: Option<String>,
    /// `-http-port`, `-dns-port`, `-node`, `-datacenter`, `-domain`: override
    /// the config files, as in the real agent.
    pub http_port: Option<u16>,
    pub dns_port: Option<u16>,
    pub node: Option<String>,
    pub datacenter: Option<String>,
    pub domain: Option<String>,
    /// `-server` (Go bool flag: `-server`, `-server=true`, `-server=false`).
    pub server: Option<bool>,
    /// `-bootstrap-expect`.
    pub bootstrap_expect: Option<i64>,
    /// `-retry-join`, in order (they come before the config files' entries).
    pub retry_join: Vec<String>,
    /// Stand-in knob `-record=<file>`: one JSON line per request and query.
    pub record: Option<PathBuf>,
    /// Stand-in knob `-hang`: accept and read, never answer.
    pub hang: bool,
    /// Everything after `agent`, as given.
    pub raw: Vec<String>,
}

/// Go's `strconv.ParseBool`, as the real agent's bool flags take.
fn parse_bool(name: &str, value: Option<&str>) -> Result<bool, Exit> {
    match value {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(Exit::usage(format!(
            "invalid boolean value {v:?} for -{name}"
        ))),
    }
}

fn parse_port(name: &str, value: &str) -> Result<u16, Exit> {
    value.parse::<u16>().map_err(|_| {
        Exit::usage(format!(
            "invalid value {value:?} for -{name}: a port number 0-65535"
        ))
    })
}

/// Parses `agent [flags]`. Flags other than the few it uses are kept
/// unchecked (the real agent has dozens).
pub fn parse(args: &[String]) -> Result<Args, Exit> {
    match args.first().map(String::as_str) {
        Some("agent") => {}
        Some(other) => {
            return Err(Exit::usage(format!(
                "stand-in runs only `agent`, got command {other:?} (args: {args:?})"
            )))
        }
        None => return Err(Exit::usage(
            "no command: stand-in runs only `agent` (nodeprep must pass an explicit agent command)",
        )),
    }
    let rest = &args[1..];
    let mut out = Args {
        config_dir: DEFAULT_CONFIG_DIR.into(),
        data_dir: DEFAULT_DATA_DIR.into(),
        config_files: Vec::new(),
        client: None,
        bind: None,
        http_port: None,
        dns_port: None,
        node: None,
        datacenter: None,
        domain: None,
        server: None,
        bootstrap_expect: None,
        retry_join: Vec::new(),
        record: None,
        hang: false,
        raw: rest.to_vec(),
    };
    let mut i = 0;
    while i < rest.len() {
        let Some((name, inline)) = split_flag(&rest[i]) else {
            return Err(Exit::usage(format!(
                "unexpected argument {:?}: the agent takes only flags",
                rest[i]
            )));
        };
        if name == "dev" && inline.is_none_or(|v| v == "true") {
            return Err(Exit::usage(format!(
                "stand-in refuses dev mode: nodeprep must pass an explicit agent command (args: {rest:?})"
            )));
        }
        match name {
            "server" => out.server = Some(parse_bool(name, inline)?),
            "hang" => out.hang = parse_bool(name, inline)?,
            _ => {}
        }
        let takes_value = matches!(
            name,
            "config-dir"
                | "data-dir"
                | "config-file"
                | "client"
                | "bind"
                | "http-port"
                | "dns-port"
                | "node"
                | "datacenter"
                | "domain"
                | "bootstrap-expect"
                | "retry-join"
                | "record"
        );
        if !takes_value {
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => v.to_string(),
            None => {
                i += 1;
                rest.get(i)
                    .cloned()
                    .ok_or_else(|| Exit::usage(format!("flag -{name} needs a value")))?
            }
        };
        match name {
            "config-dir" => out.config_dir = value.into(),
            "data-dir" => out.data_dir = value.into(),
            "config-file" => out.config_files.push(value.into()),
            "client" => out.client = Some(value),
            "bind" => out.bind = Some(value),
            "http-port" => out.http_port = Some(parse_port(name, &value)?),
            "dns-port" => out.dns_port = Some(parse_port(name, &value)?),
            "node" => out.node = Some(value),
            "datacenter" => out.datacenter = Some(value),
            "domain" => out.domain = Some(value),
            "bootstrap-expect" => {
                out.bootstrap_expect = Some(value.parse().map_err(|_| {
                    Exit::usage(format!("invalid value {value:?} for -bootstrap-expect"))
                })?)
            }
            "retry-join" => out.retry_join.push(value),
            "record" => out.record = Some(value.into()),
            _ => unreachable!(),
        }
        i += 1;
    }
    Ok(out)
}

/// The state a running stand-in agent has (what its HTTP API and DNS serve).
#[derive(Debug)]
pub struct Agent {
    pub args: Args,
    /// All config files merged in load order (later keys win, like Consul's
    /// merge for scalar fields).
    pub config: Map<String, Value>,
    /// Effective settings: the flags, else the merged config, else defaults.
    pub client_addr: String,
    pub bind_addr: String,
    pub node_id: String,
    pub node_name: String,
    pub datacenter: String,
    /// As configured (`dns::normalize_domain` lowercases and trims dots).
    pub domain: String,
    pub server: bool,
    pub bootstrap_expect: i64,
    /// Flags' entries first, then the files', as Consul merges slices.
    pub retry_join: Vec<String>,
    pub http_port: u16,
    pub dns_port: u16,
}

/// Reads the config and prepares the data dir, as the real agent does before
/// it serves anything.
pub fn prepare(args: Args) -> Result<Agent, Exit> {
    let config = load_config(&args.config_dir, &args.config_files)?;
    let client_addr = args
        .client
        .clone()
        .unwrap_or_else(|| config["client_addr"].as_str().unwrap().to_string());
    let bind_addr = args
        .bind
        .clone()
        .unwrap_or_else(|| config["bind_addr"].as_str().unwrap().to_string());
    // The flags get the checks interfaces.json gets.
    for (flag, value, single) in [("client", &args.client, false), ("bind", &args.bind, true)] {
        if let Some(v) = value {
            check_addresses(v, single).map_err(|why| Exit::env(format!("-{flag} {v:?}: {why}")))?;
        }
    }
    let text = |key: &str| -> Result<Option<String>, Exit> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Exit::env(format!(
                "config key {key} must be a string, got {}",
                kind(other)
            ))),
        }
    };
    let port = |key: &str| -> Result<Option<u16>, Exit> {
        match config.get("ports").and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    Exit::env(format!(
                        "config key ports.{key} must be a port number 0-65535 (the stand-in \
                         cannot disable a listener with -1), got {v}"
                    ))
                }),
        }
    };
    let node_name = match (args.node.clone(), text("node_name")?) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => hostname(),
    };
    let datacenter = match (args.datacenter.clone(), text("datacenter")?) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => DEFAULT_DATACENTER.to_string(),
    };
    let domain = match (args.domain.clone(), text("domain")?) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => DEFAULT_DOMAIN.to_string(),
    };
    let bool_key = |key: &str| config::scalar(config.get(key)).and_then(Value::as_bool);
    let server = args.server.or(bool_key("server")).unwrap_or(false);
    let bootstrap = bool_key("bootstrap").unwrap_or(false);
    let bootstrap_expect = args.bootstrap_expect.unwrap_or_else(|| {
        config::scalar(config.get("bootstrap_expect"))
            .and_then(Value::as_f64)
            .map(|n| n as i64)
            .unwrap_or(0)
    });
    // builder.validate's checks, in its order.
    if bootstrap && !server {
        return Err(Exit::env("'bootstrap = true' requires 'server = true'"));
    }
    if bootstrap_expect < 0 {
        return Err(Exit::env(format!(
            "bootstrap_expect cannot be {bootstrap_expect}. Must be greater than or equal to zero"
        )));
    }
    if bootstrap_expect > 0 && !server {
        return Err(Exit::env("'bootstrap_expect > 0' requires 'server = true'"));
    }
    if bootstrap_expect > 0 && bootstrap {
        return Err(Exit::env(
            "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
        ));
    }
    if let Some(key) = config::scalar(config.get("encrypt")).and_then(Value::as_str) {
        if !key.is_empty() {
            config::check_encrypt(key).map_err(Exit::env)?;
        }
    }
    let mut retry_join = args.retry_join.clone();
    if let Some(Value::Array(items)) = config.get("retry_join") {
        retry_join.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    // A lone server with bootstrap = true elects itself like
    // bootstrap_expect = 1.
    let bootstrap_expect = if bootstrap { 1 } else { bootstrap_expect };
    let http_port = match args.http_port {
        Some(p) => p,
        None => port("http")?.unwrap_or(DEFAULT_HTTP_PORT),
    };
    let dns_port = match args.dns_port {
        Some(p) => p,
        None => port("dns")?.unwrap_or(DEFAULT_DNS_PORT),
    };
    let node_id = write_node_id(&args.data_dir)?;
    Ok(Agent {
        args,
        config,
        client_addr,
        bind_addr,
        node_id,
        node_name,
        datacenter,
        domain,
        server,
        bootstrap_expect,
        retry_join,
        http_port,
        dns_port,
    })
}

/// The kernel's hostname, as the real agent's default node name (`os.Hostname`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "consul-standin".to_string())
}

fn load_config(dir: &Path, extra_files: &[PathBuf]) -> Result<Map<String, Value>, Exit> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Exit::env(format!(
            "config: Open failed on {}. {e} (is the host's /etc/consul.d bind-mounted there, readable by uid {}?)",
            dir.display(),
            ids().0
        ))
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Exit::env(format!("config: Readdir failed on {}. {e}", dir.display())))?;
        let path = entry.path();
        // Consul follows symlinks and skips sub-directories.
        if path.is_dir() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => files.push(path),
            Some("hcl") => eprintln!(
                "{BANNER}: warning: ignoring {} (Consul would parse it; the stand-in reads JSON only)",
                path.display()
            ),
            _ => eprintln!(
                "{BANNER}: warning: skipping file {}, extension must be .hcl or .json, or config format must be set",
                path.display()
            ),
        }
    }
    files.sort();

    let interfaces = dir.join(INTERFACES_FILE);
    if !files.contains(&interfaces) {
        return Err(Exit::env(format!(
            "{} is missing (config dir {} holds: {:?})",
            interfaces.display(),
            dir.display(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
        )));
    }

    let mut merged = Map::new();
    for path in files.iter().chain(extra_files) {
        let object = read_json_object(path)?;
        let findings = config::check_object(&object);
        for w in &findings.warnings {
            eprintln!("{BANNER}: warning: {}: {w}", path.display());
        }
        if let Some(e) = config::file_error(&path.display().to_string(), &findings) {
            return Err(Exit::env(e));
        }
        if *path == interfaces {
            check_interfaces(path, &object)?;
        }
        config::merge(&mut merged, object);
    }
    Ok(merged)
}

/// This process's real uid and gid (from /proc: std has no getuid).
pub fn ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let (uid, gid) = ids();
        Exit::env(format!(
            "config: failed to read {}: {e} (the agent runs as uid {uid} gid {gid})",
            path.display()
        ))
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Exit::env(format!(
            "failed to parse {}: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            path.display(),
            match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "null",
            }
        ))),
        Err(e) => Err(Exit::env(format!(
            "failed to parse {}: {e} (not valid JSON)",
            path.display()
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_interfaces(path: &Path, object: &Map<String, Value>) -> Result<(), Exit> {
    for (field, single) in [("client_addr", false), ("bind_addr", true)] {
        let value = match object.get(field) {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(Exit::env(format!(
                    "{}: {field} must be a string, got {}",
                    path.display(),
                    kind(other)
                )))
            }
            None => return Err(Exit::env(format!("{}: {field} is missing", path.display()))),
        };
        check_addresses(value, single)
            .map_err(|why| Exit::env(format!("{}: {field} {value:?}: {why}", path.display())))?;
    }
    Ok(())
}

/// Space-separated IP addresses (exactly one when `single`), or a
/// go-sockaddr template, which the stand-in cannot evaluate and accepts.
fn check_addresses(value: &str, single: bool) -> Result<(), String> {
    if value.contains("{{") {
        return Ok(());
    }
    let items: Vec<&str> = value.split_whitespace().collect();
    if items.is_empty() {
        return Err("is empty".into());
    }
    if single && items.len() > 1 {
        return Err("must be one address".into());
    }
    for item in items {
        item.parse::<IpAddr>()
            .map_err(|_| format!("{item:?} is not an IP address"))?;
    }
    Ok(())
}

/// Writes `<data dir>/node-id`, keeping an existing UUID (a restarted agent
/// keeps its node id), always through a temp file + rename so an unwritable
/// data dir is caught on every start.
fn write_node_id(dir: &Path) -> Result<String, Exit> {
    let fail = |what: &str, e: std::io::Error| {
        let (uid, gid) = ids();
        Exit::env(format!(
            "data dir {} is not writable ({what}: {e}); the agent runs as uid {uid} gid {gid}: \
             is a host dir it can write bind-mounted there?",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
    let path = dir.join("node-id");
    let existing = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| is_uuid(s));
    let id = match existing {
        Some(id) => id,
        None => new_uuid().map_err(|e| fail("generate a node id", e))?,
    };
    let tmp = dir.join(".node-id.tmp");
    std::fs::write(&tmp, &id).map_err(|e| fail("write node-id", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename node-id", e))?;
    Ok(id)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn new_uuid() -> std::io::Result<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    Ok(s.trim().to_string())
}

/// Binds the HTTP API and DNS on every client address and starts serving
/// them on threads (see [`server`]); returns the bound addresses. A bind that
/// fails is exit 1, as for the real agent.
pub fn serve(agent: &Agent) -> Result<server::Served, Exit> {
    serve_shared(agent).map(|(served, _)| served)
}

/// [`serve`], also returning the state the threads share.
pub fn serve_shared(agent: &Agent) -> Result<(server::Served, Arc<server::Shared>), Exit> {
    let ips = server::client_ips(&agent.client_addr)?;
    let recorder = server::Recorder::open(agent.args.record.as_deref())?;
    let shared = Arc::new(server::Shared {
        api: api::Api::new(api::Facts {
            node_name: agent.node_name.clone(),
            node_id: agent.node_id.clone(),
            datacenter: agent.datacenter.clone(),
            server: agent.server,
            bind_addr: agent.bind_addr.clone(),
        }),
        zone: dns::Zone {
            domain: dns::normalize_domain(&agent.domain),
            datacenter: agent.datacenter.to_ascii_lowercase(),
        },
        recorder,
        hang: agent.args.hang,
    });
    if agent.server && agent.bootstrap_expect == 1 {
        // A single-server cluster: it elects itself at once.
        let addr = shared.api.own_server_addr();
        shared.api.set_leader(api::Leader {
            addr,
            ..api::Leader::default()
        });
    }
    let served = server::start(&ips, agent.http_port, agent.dns_port, shared.clone())?;
    if !agent.server {
        let targets = join_targets(&agent.retry_join);
        if !targets.is_empty() {
            let (api_state, port) = (shared.clone(), agent.http_port);
            std::thread::spawn(move || loop {
                api_state.api.set_leader(poll_join(&targets, port));
                std::thread::sleep(JOIN_INTERVAL);
            });
        }
    }
    Ok((served, shared))
}

/// How often a client polls its `retry_join` servers.
pub const JOIN_INTERVAL: Duration = Duration::from_secs(1);

/// The literal IP addresses of `retry_join` (an optional port is dropped:
/// it is Serf's, not HTTP's). Names and cloud auto-join strings are skipped
/// with a warning: the stand-in never resolves anything.
pub fn join_targets(retry_join: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for entry in retry_join {
        let ip = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
        match ip {
            Some(ip) => out.push(ip),
            None => eprintln!(
                "{BANNER}: warning: retry_join {entry:?} is not an IP address: the stand-in never \
                 resolves names or cloud auto-join strings, it will not join it"
            ),
        }
    }
    out
}

/// One round of "joining": the first target whose HTTP API (on `port`)
/// names a leader, with its `consul` catalog entries; else no leader.
pub fn poll_join(targets: &[IpAddr], port: u16) -> api::Leader {
    for &ip in targets {
        let addr = std::net::SocketAddr::new(ip, port);
        let Ok(leader) = http_get_json(addr, "/v1/status/leader") else {
            continue;
        };
        let Some(leader) = leader.as_str().filter(|l| !l.is_empty()) else {
            continue;
        };
        let remote_consul = match http_get_json(addr, "/v1/catalog/service/consul") {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        return api::Leader {
            addr: leader.to_string(),
            remote_consul,
        };
    }
    api::Leader::default()
}

/// A GET with short timeouts, the body parsed as JSON.
pub fn http_get_json(addr: std::net::SocketAddr, path: &str) -> std::io::Result<Value> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let mut c = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: consul-standin\r\n\r\n"
    );
    c.write_all(request.as_bytes())?;
    let mut text = Vec::new();
    c.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(bad(head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| bad(&e.to_string()))
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The whole program: parse, prepare, serve, print `ready:`, wait for SIGTERM.
pub fn run(args: &[String]) -> Result<(), Exit> {
    println!("{BANNER}: starting with args {args:?}");
    let agent = prepare(parse(args)?)?;
    let (served, shared) = serve_shared(&agent)?;
    println!(
        "{BANNER}: ready: client_addr={:?} bind_addr={:?} node_id={} config_dir={} data_dir={} config_keys={:?} \
         node_name={:?} datacenter={:?} domain={:?} server={} bootstrap_expect={} retry_join={:?} \
         leader={:?} uid={} gid={} http={} dns={}{}{}",
        agent.client_addr,
        agent.bind_addr,
        agent.node_id,
        agent.args.config_dir.display(),
        agent.args.data_dir.display(),
        agent.config.keys().collect::<Vec<_>>(),
        agent.node_name,
        agent.datacenter,
        agent.domain,
        agent.server,
        agent.bootstrap_expect,
        agent.retry_join,
        shared.api.leader().addr,
        ids().0,
        ids().1,
        join(&served.http),
        join(&served.dns),
        match &agent.args.record {
            Some(p) => format!(" record={}", p.display()),
            None => String::new(),
        },
        if agent.args.hang {
            " hang=true (accepts and reads, NEVER answers)"
        } else {
            ""
        },
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
    fn refuses_dev_mode_and_other_commands() {
        for args in [
            &["agent", "-dev", "-client", "0.0.0.0"][..],
            &["agent", "--dev"],
            &["agent", "-dev=true"],
        ] {
            let e = parse(&s(args)).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(e.message.contains("refuses dev mode"), "{}", e.message);
        }
        assert_eq!(parse(&s(&["members"])).unwrap_err().code, 2);
        assert_eq!(parse(&[]).unwrap_err().code, 2);
    }

    #[test]
    fn paths_default_and_override() {
        let a = parse(&s(&["agent"])).unwrap();
        assert_eq!(a.config_dir, Path::new(DEFAULT_CONFIG_DIR));
        assert_eq!(a.data_dir, Path::new(DEFAULT_DATA_DIR));
        let a = parse(&s(&[
            "agent",
            "-config-dir=/c",
            "--data-dir",
            "/d",
            "-server",
            "-client",
            "127.0.0.1",
        ]))
        .unwrap();
        assert_eq!(a.config_dir, Path::new("/c"));
        assert_eq!(a.data_dir, Path::new("/d"));
        assert_eq!(a.client.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn addresses() {
        assert!(check_addresses("127.0.0.1 169.254.1.1", false).is_ok());
        assert!(check_addresses("{{ GetInterfaceIP \"eth0\" }}", true).is_ok());
        assert!(check_addresses("127.0.0.1 169.254.1.1", true).is_err());
        assert!(check_addresses("", false).is_err());
        assert!(check_addresses("localhost", false).is_err());
    }

    #[test]
    fn config_dir_checks() {
        let dir = std::env::temp_dir().join(format!("consul-standin-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = load_config(&dir, &[]).unwrap_err();
        assert!(
            err.message.contains("interfaces.json is missing"),
            "{}",
            err.message
        );
        std::fs::write(dir.join(INTERFACES_FILE), r#"{"client_addr": "127.0.0.1"}"#).unwrap();
        let err = load_config(&dir, &[]).unwrap_err();
        assert!(
            err.message.contains("bind_addr is missing"),
            "{}",
            err.message
        );
        std::fs::write(
            dir.join(INTERFACES_FILE),
            r#"{"client_addr": "127.0.0.1 169.254.1.1", "bind_addr": "192.0.2.10"}"#,
        )
        .unwrap();
        assert!(load_config(&dir, &[]).is_ok());
        std::fs::write(dir.join("zz.json"), "{").unwrap();
        let err = load_config(&dir, &[]).unwrap_err();
        assert!(
            err.message.contains("failed to parse ") && err.message.contains("zz.json: EOF"),
            "{}",
            err.message
        );
        std::fs::write(dir.join("zz.json"), r#"{"datacenter": "dc1"}"#).unwrap();
        let merged = load_config(&dir, &[]).unwrap();
        assert_eq!(merged["datacenter"], "dc1");
        let id = write_node_id(&dir.join("data")).unwrap();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(write_node_id(&dir.join("data")).unwrap(), id);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serving_flags() {
        let a = parse(&s(&[
            "agent",
            "-http-port=18500",
            "-dns-port",
            "18600",
            "-record=/tmp/r.jsonl",
            "-hang",
            "-node",
            "n1",
            "-datacenter=eu",
            "-domain",
            "corp",
            "-server=false",
        ]))
        .unwrap();
        assert_eq!((a.http_port, a.dns_port), (Some(18500), Some(18600)));
        assert_eq!(a.record.as_deref(), Some(Path::new("/tmp/r.jsonl")));
        assert!(a.hang);
        assert_eq!(a.node.as_deref(), Some("n1"));
        assert_eq!(a.datacenter.as_deref(), Some("eu"));
        assert_eq!(a.domain.as_deref(), Some("corp"));
        assert_eq!(a.server, Some(false));
        let a = parse(&s(&["agent", "-server"])).unwrap();
        assert_eq!((a.server, a.hang), (Some(true), false));
        assert_eq!(
            parse(&s(&["agent", "-http-port=99999"])).unwrap_err().code,
            2
        );
        assert_eq!(parse(&s(&["agent", "-hang=maybe"])).unwrap_err().code, 2);
        assert_eq!(parse(&s(&["agent", "-dns-port"])).unwrap_err().code, 2);
    }

    /// A config dir + data dir under the temp dir, removed on drop.
    struct Dirs(PathBuf);

    impl Dirs {
        fn new(tag: &str, interfaces: &str) -> Dirs {
            let dir = std::env::temp_dir()
                .join(format!("consul-standin-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("config")).unwrap();
            std::fs::write(dir.join("config").join(INTERFACES_FILE), interfaces).unwrap();
            Dirs(dir)
        }

        fn args(&self, extra: &[&str]) -> Args {
            let mut v = vec![
                "agent".to_string(),
                format!("-config-dir={}", self.0.join("config").display()),
                format!("-data-dir={}", self.0.join("data").display()),
            ];
            v.extend(extra.iter().map(|a| a.to_string()));
            parse(&v).unwrap()
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn settings_from_flags_config_and_defaults() {
        let d = Dirs::new(
            "settings",
            r#"{"client_addr": "127.0.0.1", "bind_addr": "192.0.2.10"}"#,
        );
        let a = prepare(d.args(&[])).unwrap();
        assert_eq!((a.http_port, a.dns_port), (8500, 8600));
        assert_eq!(
            (a.datacenter.as_str(), a.domain.as_str()),
            ("dc1", "consul")
        );
        assert_eq!(a.node_name, hostname());
        assert!(!a.server);
        std::fs::write(
            d.0.join("config/agent.json"),
            r#"{"datacenter": "eu-west", "server": true, "node_name": "host-a", "domain": "corp.",
                "ports": {"http": 18500, "dns": 18600}}"#,
        )
        .unwrap();
        let a = prepare(d.args(&[])).unwrap();
        assert_eq!((a.http_port, a.dns_port), (18500, 18600));
        assert_eq!(
            (
                a.datacenter.as_str(),
                a.domain.as_str(),
                a.node_name.as_str(),
                a.server
            ),
            ("eu-west", "corp.", "host-a", true)
        );
        let a = prepare(d.args(&[
            "-http-port=1",
            "-dns-port=2",
            "-node=n",
            "-datacenter=x",
            "-server=false",
        ]))
        .unwrap();
        assert_eq!(
            (
                a.http_port,
                a.dns_port,
                a.node_name.as_str(),
                a.datacenter.as_str(),
                a.server
            ),
            (1, 2, "n", "x", false)
        );
        std::fs::write(d.0.join("config/agent.json"), r#"{"ports": {"http": -1}}"#).unwrap();
        assert!(prepare(d.args(&[]))
            .unwrap_err()
            .message
            .contains("ports.http"));
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_http_and_dns_on_every_client_address_and_records() {
        let d = Dirs::new(
            "serve",
            r#"{"client_addr": "127.0.0.1 127.0.0.2", "bind_addr": "192.0.2.10"}"#,
        );
        std::fs::write(
            d.0.join("config/agent.json"),
            r#"{"server": true, "bootstrap_expect": 1}"#,
        )
        .unwrap();
        let record = d.0.join("record.jsonl");
        let agent = prepare(d.args(&[
            "-http-port=0",
            "-dns-port=0",
            "-node=unit-node",
            &format!("-record={}", record.display()),
        ]))
        .unwrap();
        let served = serve(&agent).unwrap();
        assert_eq!(served.http.len(), 2);
        assert_eq!(served.http[0].ip().to_string(), "127.0.0.1");
        assert_eq!(served.dns[1].ip().to_string(), "127.0.0.2");
        for &addr in &served.http {
            let answer = get(addr, "/v1/status/leader");
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.ends_with("\r\n\r\n\"192.0.2.10:8300\""), "{answer}");
        }
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut q = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["unit-node", "node", "consul"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        sock.send_to(&q, served.dns[1]).unwrap();
        let mut buf = [0; 512];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[n - 4..n], &[192, 0, 2, 10]);
        let lines: Vec<Value> = std::fs::read_to_string(&record)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["method"], "GET");
        assert_eq!(lines[0]["path"], "/v1/status/leader");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[2]["proto"], "dns");
        assert_eq!(lines[2]["name"], "unit-node.node.consul.");
        assert_eq!(lines[2]["answers"], serde_json::json!(["192.0.2.10"]));
    }

    #[test]
    fn consul_validation_of_the_merged_config() {
        let d = Dirs::new(
            "validate",
            r#"{"client_addr": "127.0.0.1", "bind_addr": "192.0.2.10"}"#,
        );
        let agent_json = |text: &str| std::fs::write(d.0.join("config/agent.json"), text).unwrap();
        let refused = |text: &str, extra: &[&str]| {
            agent_json(text);
            let e = prepare(d.args(extra)).unwrap_err();
            assert_eq!(e.code, 1, "{text}");
            e.message
        };
        // Consul's own messages (agent/config/builder.go).
        assert_eq!(
            refused(r#"{"bootstrap_expect": 1}"#, &[]),
            "'bootstrap_expect > 0' requires 'server = true'"
        );
        assert_eq!(
            refused(
                r#"{"server": true, "bootstrap_expect": 1}"#,
                &["-server=false"]
            ),
            "'bootstrap_expect > 0' requires 'server = true'"
        );
        assert_eq!(
            refused(r#"{"server": true, "bootstrap_expect": -1}"#, &[]),
            "bootstrap_expect cannot be -1. Must be greater than or equal to zero"
        );
        assert_eq!(
            refused(r#"{"bootstrap": true}"#, &[]),
            "'bootstrap = true' requires 'server = true'"
        );
        assert_eq!(
            refused(r#"{"encrypt": "this is not a valid key"}"#, &[]),
            "encrypt has invalid key: illegal base64 data at input byte 4"
        );
        assert!(refused(r#"{"encrypt": "c2hvcnQ="}"#, &[])
            .contains("key size must be 16, 24 or 32 bytes"));
        let e = refused(r#"{"datacenter": "dc1", "bogus": true}"#, &[]);
        assert!(
            e.ends_with("agent.json: 1 error occurred: * invalid config key bogus"),
            "{e}"
        );
        assert!(e.starts_with("failed to parse "), "{e}");
        let e = refused(r#"{"server": "yes"}"#, &[]);
        assert!(
            e.contains("'server' expected type 'bool', got unconvertible type 'string'"),
            "{e}"
        );
        assert!(refused("[1]", &[]).contains("cannot unmarshal array"));

        // nodeprep's server file; files merge in lexical order; slices append.
        agent_json(
            r#"{"datacenter":"dc1","server":true,"bootstrap_expect":1,"retry_join":["192.0.2.1"]}"#,
        );
        std::fs::write(
            d.0.join("config/zz-extra.json"),
            r#"{"datacenter":"dc2","retry_join":["192.0.2.2"]}"#,
        )
        .unwrap();
        let a = prepare(d.args(&["-retry-join=192.0.2.3"])).unwrap();
        assert_eq!(
            (a.server, a.bootstrap_expect, a.datacenter.as_str()),
            (true, 1, "dc2")
        );
        assert_eq!(a.retry_join, ["192.0.2.3", "192.0.2.1", "192.0.2.2"]);
        std::fs::remove_file(d.0.join("config/zz-extra.json")).unwrap();
        // A -config-file comes after the dir's files.
        let extra = d.0.join("extra.json");
        std::fs::write(
            &extra,
            r#"{"node_name": "from-flag-file", "ports": {"nope": 1}}"#,
        )
        .unwrap();
        let e = prepare(d.args(&[&format!("-config-file={}", extra.display())])).unwrap_err();
        assert!(
            e.message.contains("invalid config key ports.nope"),
            "{}",
            e.message
        );
        std::fs::write(&extra, r#"{"node_name": "from-flag-file"}"#).unwrap();
        let a = prepare(d.args(&[&format!("-config-file={}", extra.display())])).unwrap();
        assert_eq!(a.node_name, "from-flag-file");
    }

    #[test]
    fn a_client_joins_a_standin_server_through_retry_join() {
        let srv = Dirs::new(
            "join-server",
            r#"{"client_addr": "127.0.0.1", "bind_addr": "192.0.2.20"}"#,
        );
        std::fs::write(
            srv.0.join("config/agent.json"),
            r#"{"server": true, "bootstrap_expect": 1, "node_name": "srv"}"#,
        )
        .unwrap();
        let server = prepare(srv.args(&["-http-port=0", "-dns-port=0"])).unwrap();
        let (served, server_state) = serve_shared(&server).unwrap();
        assert_eq!(server_state.api.leader().addr, "192.0.2.20:8300");
        let port = served.http[0].port();

        // A server waiting for two more: no leader.
        std::fs::write(
            srv.0.join("config/agent.json"),
            r#"{"server": true, "bootstrap_expect": 3}"#,
        )
        .unwrap();
        let waiting = prepare(srv.args(&["-http-port=0", "-dns-port=0"])).unwrap();
        let (w, _) = serve_shared(&waiting).unwrap();
        assert_eq!(http_get_json(w.http[0], "/v1/status/leader").unwrap(), "");

        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let leader = poll_join(&[ip], port);
        assert_eq!(leader.addr, "192.0.2.20:8300");
        assert_eq!(leader.remote_consul[0]["Node"], "srv");
        assert_eq!(leader.remote_consul[0]["Address"], "192.0.2.20");
        // Nothing listening, or a server without a leader: no leader.
        assert_eq!(poll_join(&[ip], w.http[0].port()), api::Leader::default());
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = unused.local_addr().unwrap().port();
        drop(unused);
        assert_eq!(poll_join(&[ip], dead), api::Leader::default());
        assert_eq!(
            join_targets(&[
                "192.0.2.1".into(),
                "192.0.2.2:8301".into(),
                "[2001:db8::1]:8301".into(),
                "consul.example.com".into(),
                "provider=aws tag_key=consul".into(),
            ]),
            ["192.0.2.1", "192.0.2.2", "2001:db8::1"].map(|a| a.parse::<IpAddr>().unwrap())
        );

        // The client's own loop: joins within a couple of seconds, on its
        // own HTTP port (here the server's, as in a cluster with one port).
        let cli = Dirs::new(
            "join-client",
            r#"{"client_addr": "127.0.0.2", "bind_addr": "192.0.2.21"}"#,
        );
        std::fs::write(
            cli.0.join("config/agent.json"),
            r#"{"retry_join": ["127.0.0.1", "provider=aws tag_key=x"]}"#,
        )
        .unwrap();
        let client = prepare(cli.args(&[&format!("-http-port={port}"), "-dns-port=0"])).unwrap();
        let (_c, client_state) = serve_shared(&client).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while client_state.api.leader().addr.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the client never joined"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(client_state.api.leader().addr, "192.0.2.20:8300");
    }

    #[test]
    fn hang_reads_but_never_answers() {
        use std::io::{ErrorKind, Read, Write};
        let d = Dirs::new(
            "hang",
            r#"{"client_addr": "127.0.0.1", "bind_addr": "192.0.2.10"}"#,
        );
        let agent = prepare(d.args(&["-http-port=0", "-dns-port=0", "-hang"])).unwrap();
        let served = serve(&agent).unwrap();
        let mut c = std::net::TcpStream::connect(served.http[0]).unwrap();
        c.write_all(b"GET /v1/agent/self HTTP/1.1\r\n\r\n").unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let err = c.read(&mut [0; 16]).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
    }

    #[test]
    fn bind_failures_and_templates_exit_1() {
        let d = Dirs::new(
            "bindfail",
            r#"{"client_addr": "127.0.0.1", "bind_addr": "192.0.2.10"}"#,
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let agent = prepare(d.args(&[&format!("-http-port={port}"), "-dns-port=0"])).unwrap();
        let e = serve(&agent).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.message
                .contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}")),
            "{}",
            e.message
        );
        // TEST-NET-3: on no interface here (binding sends nothing).
        let agent = prepare(d.args(&["-client=203.0.113.77", "-http-port=0"])).unwrap();
        let e = serve(&agent).unwrap_err();
        assert!(
            e.message.contains("203.0.113.77") && e.message.contains("no interface"),
            "{}",
            e.message
        );
        let agent = prepare(d.args(&["-client={{ GetInterfaceIP \"eth0\" }}"])).unwrap();
        assert!(serve(&agent).unwrap_err().message.contains("template"));
        for (flag, message) in [
            ("-client=", "-client \"\": is empty"),
            (
                "-client=127.0.0.1 nowhere",
                "\"nowhere\" is not an IP address",
            ),
            ("-bind=10.0.0.1 10.0.0.2", "must be one address"),
        ] {
            let e = prepare(d.args(&[flag])).unwrap_err();
            assert_eq!(e.code, 1);
            assert!(e.message.contains(message), "{flag}: {}", e.message);
        }
    }
}
