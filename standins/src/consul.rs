//! The Consul agent STAND-IN (`consul-standin`). It is NOT Consul: it runs no
//! Raft and no gossip, and answers only the few API calls and DNS questions
//! nodeprep asks, always as a one-node, one-server cluster. It checks what
//! the real `hashicorp/consul` image would need from nodeprep, then serves
//! until SIGTERM:
//!
//! 1. the command is `agent` (anything else: exit 2), without `-dev` (the
//!    image's default CMD is a dev server; nodeprep must always pass its own
//!    agent command: exit 2);
//! 2. the config dir (default `/consul/config`, `-config-dir` overrides, as the
//!    real image's entrypoint passes `-config-dir=/consul/config`) exists; every
//!    `*.json` in it, and every `-config-file`, is a JSON object;
//!    `interfaces.json` is there with string `client_addr` and `bind_addr`,
//!    each a space-separated list of IP addresses (a single one for bind_addr)
//!    or a go-sockaddr template (`{{ ... }}`, accepted unchecked); else exit 1;
//! 3. the data dir (default `/consul/data`, `-data-dir` overrides) can be
//!    written: it writes `node-id` there (kept if it holds a UUID already, like
//!    the real agent; rewritten through a temp file either way); else exit 1;
//! 4. [`serve`]: on EVERY client address (`client_addr`, `-client`
//!    overrides; `0.0.0.0` is the wildcard, anything else is bound as given)
//!    it listens for HTTP on the HTTP port and for DNS over UDP on the DNS
//!    port; a bind that fails (the address is on no interface, the port is
//!    taken) or a template client_addr: exit 1. The `ready:` line comes only
//!    once all are bound and names them.
//!
//! What it answers: [`api`] (HTTP) and [`dns`]. Settings, each flag overriding
//! the merged config files as in the real agent:
//!
//! | setting | flag | config key | default |
//! |---|---|---|---|
//! | HTTP port | `-http-port` | `ports.http` | 8500 |
//! | DNS port | `-dns-port` | `ports.dns` | 8600 |
//! | node name | `-node` | `node_name` | the hostname |
//! | datacenter | `-datacenter` | `datacenter` | `dc1` |
//! | DNS domain | `-domain` | `domain` | `consul` |
//! | server | `-server` | `server` | false |
//!
//! Test knobs (no real agent has them): `-record=<file>` appends one JSON line
//! per HTTP request and DNS query; `-hang` accepts connections and reads
//! requests and queries but never answers (probe-timeout tests).
//!
//! Exit 1 under restart policy `always` makes the container restart over and
//! over, so a broken config shows as drift (RestartCount grows).

pub mod api;
pub mod dns;
pub mod http;
pub mod server;

use crate::{signals, split_flag, Banner, Exit};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
    let server = match (args.server, config.get("server")) {
        (Some(b), _) => b,
        (None, None | Some(Value::Null)) => false,
        (None, Some(Value::Bool(b))) => *b,
        (None, Some(other)) => {
            return Err(Exit::env(format!(
                "config key server must be a boolean, got {}",
                kind(other)
            )))
        }
    };
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
            "cannot read config dir {}: {e} (is the host's /etc/consul.d bind-mounted there?)",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Exit::env(format!("reading {}: {e}", dir.display())))?;
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => files.push(path),
            Some("hcl") => eprintln!(
                "{BANNER}: warning: ignoring {} (the stand-in does not parse HCL)",
                path.display()
            ),
            _ => {}
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
        if *path == interfaces {
            check_interfaces(path, &object)?;
        }
        merged.extend(object);
    }
    Ok(merged)
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::env(format!("cannot read {}: {e}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Exit::env(format!(
            "{} is JSON but not an object (got {})",
            path.display(),
            kind(&other)
        ))),
        Err(e) => Err(Exit::env(format!(
            "{} is not valid JSON: {e}",
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
        Exit::env(format!(
            "data dir {} is not writable ({what}: {e}); is a writable host dir bind-mounted there?",
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
    let ips = server::client_ips(&agent.client_addr)?;
    let recorder = server::Recorder::open(agent.args.record.as_deref())?;
    let shared = server::Shared {
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
            node: agent.node_name.to_ascii_lowercase(),
            addr: agent.bind_addr.parse().ok(),
        },
        recorder,
        hang: agent.args.hang,
    };
    server::start(&ips, agent.http_port, agent.dns_port, shared)
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
    let served = serve(&agent)?;
    println!(
        "{BANNER}: ready: client_addr={:?} bind_addr={:?} node_id={} config_dir={} data_dir={} config_keys={:?} \
         node_name={:?} datacenter={:?} domain={:?} server={} http={} dns={}{}{}",
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
            err.message.contains("zz.json is not valid JSON"),
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
