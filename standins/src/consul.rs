//! The Consul agent STAND-IN (`consul-standin`). It is NOT Consul: it runs no
//! Raft, no gossip, no API. It checks what the real `hashicorp/consul` image
//! would need from nodeprep, then blocks until SIGTERM:
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
//!    the real agent; rewritten through a temp file either way); else exit 1.
//!
//! Exit 1 under restart policy `always` makes the container restart over and
//! over, so a broken config shows as drift (RestartCount grows).
//!
//! Later: [`serve`] is where listeners go (HTTP API on each client_addr:8500
//! answering `/v1/agent/self`, `/v1/status/leader`, `/v1/agent/check/register`;
//! DNS on 8600), using the merged config in [`Agent::config`].

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
    /// Everything after `agent`, as given.
    pub raw: Vec<String>,
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
        let takes_value = matches!(
            name,
            "config-dir" | "data-dir" | "config-file" | "client" | "bind"
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
            _ => unreachable!(),
        }
        i += 1;
    }
    Ok(out)
}

/// The state a running stand-in agent has (what a later HTTP API serves).
#[derive(Debug)]
pub struct Agent {
    pub args: Args,
    /// All config files merged in load order (later keys win, like Consul's
    /// merge for scalar fields).
    pub config: Map<String, Value>,
    /// Effective addresses: the flags, else the merged config.
    pub client_addr: String,
    pub bind_addr: String,
    pub node_id: String,
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
    let node_id = write_node_id(&args.data_dir)?;
    Ok(Agent {
        args,
        config,
        client_addr,
        bind_addr,
        node_id,
    })
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

/// Starts whatever the stand-in agent serves. Nothing yet: later issues add
/// the HTTP API and DNS here (one thread per listener, each stopping when
/// [`signals::terminated`] turns true).
pub fn serve(_agent: &Agent) -> Result<(), Exit> {
    Ok(())
}

/// The whole program: parse, prepare, serve, print `ready:`, wait for SIGTERM.
pub fn run(args: &[String]) -> Result<(), Exit> {
    println!("{BANNER}: starting with args {args:?}");
    let agent = prepare(parse(args)?)?;
    serve(&agent)?;
    println!(
        "{BANNER}: ready: client_addr={:?} bind_addr={:?} node_id={} config_dir={} data_dir={} config_keys={:?}",
        agent.client_addr,
        agent.bind_addr,
        agent.node_id,
        agent.args.config_dir.display(),
        agent.args.data_dir.display(),
        agent.config.keys().collect::<Vec<_>>(),
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
}
