//! Which services the registrator STAND-IN registers for a container: the
//! rules of gliderlabs/registrator v7 (tag v7, commit
//! 8bed3a616acb83b1d2145f90e338f9da3d0b42f2), `bridge/bridge.go` (`add`,
//! `newService`), `bridge/util.go` (`servicePort`, `serviceMetaData`,
//! `combineTags`, `mapDefault`) and `consul/consul.go` (`Register`,
//! `buildCheck`). Pure functions of the container's inspect JSON.
//!
//! - Ports: `HostConfig.PortBindings` (how `--net=host -p` containers are
//!   found), then `NetworkSettings.Ports` (exposed ports, published or not),
//!   keyed by `<port>/<proto>`. None at all: "ignored: no published ports"
//!   (a host-network container without `-p`, like consul and registrator
//!   themselves). A port with no host port is skipped unless `-internal`.
//! - Name: `SERVICE_<port>_NAME`, else `SERVICE_NAME`, else the image's base
//!   name (`path.Base(image)` up to the first `:`); with more than one port
//!   and no port-specific name, `-<exposed port>` is appended.
//! - ID: `<registrator's hostname>:<container name>:<exposed port>`, plus
//!   `:udp` for UDP; `SERVICE_[<port>_]ID` overrides it.
//! - Address and port: `-ip` and the published host port; with `-internal`
//!   the container's own IP and the exposed port.
//! - Tags: `SERVICE_[<port>_]TAGS` (comma-separated), then `-tags`, then
//!   `udp` for UDP ports. `SERVICE_[<port>_]IGNORE` skips the port.
//! - Metadata comes from the environment, then the labels (sorted here; Go
//!   iterates a map), keys lowercased after `SERVICE_`; a port-specific key
//!   wins over a general one.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What the command line says about services.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `-ip`.
    pub host_ip: String,
    /// `-internal`.
    pub internal: bool,
    /// `-tags`.
    pub force_tags: String,
    /// registrator's own hostname (`os.Hostname`).
    pub hostname: String,
}

/// One exposed port of a container (`bridge.ServicePort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub host_port: String,
    pub host_ip: String,
    pub exposed_port: String,
    pub exposed_ip: String,
    pub port_type: String,
    pub container_id: String,
}

/// A service to register (`bridge.Service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub port: u16,
    pub ip: String,
    pub tags: Vec<String>,
    pub attrs: BTreeMap<String, String>,
    pub origin: ServicePort,
}

/// `bridge/util.go` `servicePort`.
fn service_port(container: &Value, key: &str, published: &Value) -> ServicePort {
    let first = published.as_array().and_then(|a| a.first());
    let host_port = first
        .and_then(|b| b["HostPort"].as_str())
        .unwrap_or("")
        .to_string();
    // v7 takes the binding's HostIp ("0.0.0.0" when empty), then tests
    // `nm != "bridge" || nm != "default" || nm != "host"`, which is always
    // true: the host IP becomes the container's address on its network-mode
    // network ("" for host networking). `-ip` overrides it anyway.
    let nm = container["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or("");
    let host_ip = container["NetworkSettings"]["Networks"][nm]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (exposed_port, port_type) = match key.split_once('/') {
        Some((p, t)) => (p.to_string(), t.to_string()),
        None => (key.to_string(), "tcp".to_string()),
    };
    let mut exposed_ip = container["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if exposed_ip.is_empty() {
        if let Some(nets) = container["NetworkSettings"]["Networks"].as_object() {
            for n in nets.values() {
                exposed_ip = n["IPAddress"].as_str().unwrap_or("").to_string();
            }
        }
    }
    ServicePort {
        host_port,
        host_ip,
        exposed_port,
        exposed_ip,
        port_type,
        container_id: container["Id"].as_str().unwrap_or("").to_string(),
    }
}

/// `bridge/util.go` `serviceMetaData`: (metadata, keys that came from a
/// port-specific variable).
pub fn service_metadata(
    container: &Value,
    port: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, bool>) {
    let mut meta: Vec<String> = container["Config"]["Env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(labels) = container["Config"]["Labels"].as_object() {
        let sorted: BTreeMap<&String, &Value> = labels.iter().collect();
        for (k, v) in sorted {
            meta.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    let mut metadata = BTreeMap::new();
    let mut from_port: BTreeMap<String, bool> = BTreeMap::new();
    for kv in meta {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let Some(rest) = k.strip_prefix("SERVICE_") else {
            continue;
        };
        let key = rest.to_lowercase();
        if from_port.get(&key).copied().unwrap_or(false) {
            continue;
        }
        match key.split_once('_') {
            Some((p, sub)) if p.parse::<i64>().is_ok() => {
                if p != port {
                    continue;
                }
                metadata.insert(sub.to_string(), v.to_string());
                from_port.insert(sub.to_string(), true);
            }
            _ => {
                metadata.insert(key, v.to_string());
            }
        }
    }
    (metadata, from_port)
}

fn map_default(m: &BTreeMap<String, String>, key: &str, default: &str) -> String {
    match m.get(key) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => default.to_string(),
    }
}

/// `bridge/util.go` `combineTags`.
fn combine_tags(parts: &[&str]) -> Vec<String> {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| p.split(','))
        .map(str::to_string)
        .collect()
}

/// Go's `path.Base`.
fn path_base(p: &str) -> &str {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return if p.is_empty() { "." } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// The service name registrator defaults to for an image reference.
pub fn default_name(image: &str) -> String {
    path_base(image).split(':').next().unwrap_or("").to_string()
}

/// `bridge.go` `newService`; None when the port is to be ignored.
fn new_service(
    container: &Value,
    port: &ServicePort,
    group: bool,
    cfg: &Config,
) -> Option<Service> {
    let image = container["Config"]["Image"].as_str().unwrap_or("");
    let default = default_name(image);
    let hostname = if cfg.hostname.is_empty() {
        port.host_ip.clone()
    } else {
        cfg.hostname.clone()
    };
    let mut host_ip = port.host_ip.clone();
    if !cfg.host_ip.is_empty() {
        host_ip = cfg.host_ip.clone();
    }
    let (mut metadata, from_port) = service_metadata(container, &port.exposed_port);
    if !map_default(&metadata, "ignore", "").is_empty() {
        return None;
    }
    let container_name = container["Name"].as_str().unwrap_or("");
    let container_name = container_name.strip_prefix('/').unwrap_or(container_name);
    let mut id = format!("{hostname}:{container_name}:{}", port.exposed_port);
    let mut name = map_default(&metadata, "name", &default);
    if group && !from_port.get("name").copied().unwrap_or(false) {
        name = format!("{name}-{}", port.exposed_port);
    }
    let (ip, p) = if cfg.internal {
        (
            port.exposed_ip.clone(),
            port.exposed_port.parse().unwrap_or(0),
        )
    } else {
        (host_ip, port.host_port.parse().unwrap_or(0))
    };
    let tags_meta = map_default(&metadata, "tags", "");
    let tags = if port.port_type == "udp" {
        id.push_str(":udp");
        combine_tags(&[&tags_meta, &cfg.force_tags, "udp"])
    } else {
        combine_tags(&[&tags_meta, &cfg.force_tags])
    };
    let override_id = map_default(&metadata, "id", "");
    if !override_id.is_empty() {
        id = override_id;
    }
    for k in ["id", "tags", "name"] {
        metadata.remove(k);
    }
    Some(Service {
        id,
        name,
        port: p,
        ip,
        tags,
        attrs: metadata,
        origin: port.clone(),
    })
}

/// `bridge.go` `add` for an inspected container: the services to register,
/// and the log lines registrator prints for what it skips.
pub fn services(container: &Value, cfg: &Config) -> (Vec<Service>, Vec<String>) {
    let id = container["Id"].as_str().unwrap_or("");
    let short = &id[..id.len().min(12)];
    let mut ports: BTreeMap<String, ServicePort> = BTreeMap::new();
    for source in [
        &container["HostConfig"]["PortBindings"],
        &container["NetworkSettings"]["Ports"],
    ] {
        if let Some(map) = source.as_object() {
            for (key, published) in map {
                ports.insert(key.clone(), service_port(container, key, published));
            }
        }
    }
    let mut log = Vec::new();
    if ports.is_empty() {
        log.push(format!("ignored: {short} no published ports"));
        return (Vec::new(), log);
    }
    let group = ports.len() > 1;
    let mut out = Vec::new();
    for port in ports.values() {
        if !cfg.internal && port.host_port.is_empty() {
            log.push(format!(
                "ignored: {short} port {} not published on host",
                port.exposed_port
            ));
            continue;
        }
        match new_service(container, port, group, cfg) {
            Some(s) => out.push(s),
            None => log.push(format!(
                "ignored: {short} service on port {}",
                port.exposed_port
            )),
        }
    }
    (out, log)
}

/// `consul/consul.go` `Register` + `buildCheck`: the body of
/// `PUT /v1/agent/service/register`, as the consul API client of that time
/// encodes `AgentServiceRegistration` (empty fields left out, `Check` and
/// `Checks` always present).
pub fn registration(s: &Service) -> Value {
    let mut body = Map::new();
    let mut put = |k: &str, v: Value, empty: bool| {
        if !empty {
            body.insert(k.to_string(), v);
        }
    };
    put("ID", json!(s.id), s.id.is_empty());
    put("Name", json!(s.name), s.name.is_empty());
    put("Tags", json!(s.tags), s.tags.is_empty());
    put("Port", json!(s.port), s.port == 0);
    put("Address", json!(s.ip), s.ip.is_empty());
    body.insert("Check".into(), check(s));
    body.insert("Checks".into(), Value::Null);
    Value::Object(body)
}

fn check(s: &Service) -> Value {
    let a = |k: &str| s.attrs.get(k).filter(|v| !v.is_empty());
    let mut c = Map::new();
    if let Some(path) = a("check_http") {
        c.insert(
            "HTTP".into(),
            json!(format!("http://{}:{}{path}", s.ip, s.port)),
        );
        if let Some(t) = a("check_timeout") {
            c.insert("Timeout".into(), json!(t));
        }
    } else if let Some(cmd) = a("check_cmd") {
        let o = &s.origin;
        let cid = &o.container_id[..o.container_id.len().min(12)];
        c.insert(
            "Script".into(),
            json!(format!("check-cmd {cid} {} {cmd}", o.exposed_port)),
        );
    } else if let Some(script) = a("check_script") {
        let script = script
            .replace("$SERVICE_IP", &s.origin.host_ip)
            .replace("$SERVICE_PORT", &s.origin.host_port);
        c.insert("Script".into(), json!(script));
    } else if let Some(ttl) = a("check_ttl") {
        c.insert("TTL".into(), json!(ttl));
    } else if a("check_tcp").is_some() {
        c.insert("TCP".into(), json!(format!("{}:{}", s.ip, s.port)));
        if let Some(t) = a("check_timeout") {
            c.insert("Timeout".into(), json!(t));
        }
    } else {
        return Value::Null;
    }
    if ["HTTP", "TCP", "Script"].iter().any(|k| c.contains_key(*k)) {
        let interval = a("check_interval").cloned().unwrap_or_else(|| "10s".into());
        c.insert("Interval".into(), json!(interval));
    }
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            host_ip: "192.0.2.10".into(),
            internal: false,
            force_tags: String::new(),
            hostname: "host-a".into(),
        }
    }

    /// An inspect result shaped like Docker 20.10's.
    fn container(image: &str, env: &[&str], net: &str, bindings: Value, ports: Value) -> Value {
        json!({
            "Id": "4f2a6c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
            "Name": "/web-1",
            "Config": {"Image": image, "Env": env, "Labels": {}, "Hostname": "4f2a6c1d9e8b"},
            "HostConfig": {"NetworkMode": net, "PortBindings": bindings},
            "NetworkSettings": {
                "IPAddress": if net == "bridge" { "172.17.0.5" } else { "" },
                "Ports": ports,
                "Networks": {net: {"IPAddress": if net == "bridge" { "172.17.0.5" } else { "" }}},
            },
        })
    }

    #[test]
    fn default_names_are_the_images_base_name() {
        for (image, name) in [
            ("redis", "redis"),
            ("gliderlabs/foobar", "foobar"),
            ("registry.example:5000/team/web:1.2", "web"),
            ("nodeprep-test/workload-standin:1", "workload-standin"),
            ("sha256:4f2a6c1d", "sha256"),
            ("web@sha256:abc", "web@sha256"),
        ] {
            assert_eq!(default_name(image), name, "{image}");
        }
    }

    #[test]
    fn a_published_port_of_a_host_network_container() {
        // `docker run --net=host -p 18080:8080 -e SERVICE_NAME=web ...`
        let c = container(
            "nodeprep-test/workload-standin:1",
            &["PATH=/bin", "SERVICE_NAME=web", "SERVICE_TAGS=v1,blue"],
            "host",
            json!({"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}),
            json!({}),
        );
        let (s, log) = services(&c, &cfg());
        assert!(log.is_empty(), "{log:?}");
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.id, "host-a:web-1:8080");
        assert_eq!(s.name, "web");
        assert_eq!((s.ip.as_str(), s.port), ("192.0.2.10", 18080));
        assert_eq!(s.tags, ["v1", "blue"]);
        assert_eq!(
            registration(s),
            json!({"ID": "host-a:web-1:8080", "Name": "web", "Tags": ["v1", "blue"], "Port": 18080,
                   "Address": "192.0.2.10", "Check": null, "Checks": null})
        );
    }

    #[test]
    fn host_network_without_ports_is_ignored() {
        // consul and registrator themselves.
        let c = container("hashicorp/consul:1.20.1", &[], "host", json!({}), json!({}));
        let (s, log) = services(&c, &cfg());
        assert!(s.is_empty());
        assert_eq!(log, ["ignored: 4f2a6c1d9e8b no published ports"]);
        let c = container("x", &[], "host", Value::Null, Value::Null);
        assert!(services(&c, &cfg()).0.is_empty());
    }

    #[test]
    fn several_ports_get_suffixes_unless_named_per_port() {
        // nginx exposing 80 and 443, both published, plus an unpublished 9000.
        let c = container(
            "library/nginx:1.25",
            &[
                "SERVICE_443_NAME=https",
                "SERVICE_443_TAGS=tls",
                "SERVICE_TAGS=www",
                "SERVICE_9000_IGNORE=1",
            ],
            "bridge",
            json!({}),
            json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                   "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
                   "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                   "9000/tcp": null}),
        );
        let (s, log) = services(&c, &cfg());
        let got: Vec<(&str, &str, u16, Vec<String>)> = s
            .iter()
            .map(|s| (s.id.as_str(), s.name.as_str(), s.port, s.tags.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("host-a:web-1:443", "https", 8443, vec!["tls".to_string()]),
                (
                    "host-a:web-1:53:udp",
                    "nginx-53",
                    5353,
                    vec!["www".into(), "udp".into()]
                ),
                ("host-a:web-1:80", "nginx-80", 8080, vec!["www".to_string()]),
            ]
        );
        assert_eq!(
            log,
            ["ignored: 4f2a6c1d9e8b port 9000 not published on host"]
        );
        // SERVICE_NAME still gets the suffix when there are several ports.
        let c = container(
            "img",
            &["SERVICE_NAME=api"],
            "bridge",
            json!({}),
            json!({"80/tcp": [{"HostPort": "1"}], "81/tcp": [{"HostPort": "2"}]}),
        );
        let names: Vec<String> = services(&c, &cfg()).0.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["api-80", "api-81"]);
    }

    #[test]
    fn internal_uses_the_container_ip_and_exposed_ports() {
        let c = container(
            "team/db",
            &[
                "SERVICE_ID=custom-id",
                "SERVICE_CHECK_TTL=30s",
                "SERVICE_REGION=eu",
            ],
            "bridge",
            json!({}),
            json!({"5432/tcp": null}),
        );
        assert!(services(&c, &cfg()).0.is_empty(), "not published");
        let internal = Config {
            internal: true,
            force_tags: "x,y".into(),
            ..cfg()
        };
        let (s, _) = services(&c, &internal);
        let s = &s[0];
        assert_eq!((s.id.as_str(), s.name.as_str()), ("custom-id", "db"));
        assert_eq!((s.ip.as_str(), s.port), ("172.17.0.5", 5432));
        assert_eq!(s.tags, ["x", "y"]);
        assert_eq!(
            s.attrs,
            BTreeMap::from([
                ("check_ttl".to_string(), "30s".to_string()),
                ("region".to_string(), "eu".to_string())
            ])
        );
        assert_eq!(registration(s)["Check"], json!({"TTL": "30s"}));
    }

    #[test]
    fn metadata_rules() {
        let mut c = container(
            "img",
            &[
                "SERVICE_80_NAME=a",
                "SERVICE_NAME=b",
                "SERVICE_81_NAME=c",
                "NOT_SERVICE_X=1",
                "SERVICE_EMPTY",
            ],
            "host",
            json!({}),
            json!({}),
        );
        c["Config"]["Labels"] = json!({"SERVICE_TAGS": "from-label", "other": "x"});
        let (m, from_port) = service_metadata(&c, "80");
        assert_eq!(m["name"], "a", "the port-specific name wins");
        assert_eq!(m["tags"], "from-label", "labels count too");
        assert!(from_port["name"]);
        assert!(!m.contains_key("empty"));
        let (m, _) = service_metadata(&c, "443");
        assert_eq!(m["name"], "b");
        // HTTP and TCP checks (consul/consul.go buildCheck).
        let mut s = services(
            &container(
                "img",
                &["SERVICE_CHECK_HTTP=/health"],
                "host",
                json!({"80/tcp": [{"HostPort": "8080"}]}),
                json!({}),
            ),
            &cfg(),
        )
        .0
        .remove(0);
        assert_eq!(
            registration(&s)["Check"],
            json!({"HTTP": "http://192.0.2.10:8080/health", "Interval": "10s"})
        );
        s.attrs = BTreeMap::from([
            ("check_tcp".into(), "true".into()),
            ("check_interval".into(), "5s".into()),
        ]);
        assert_eq!(
            registration(&s)["Check"],
            json!({"TCP": "192.0.2.10:8080", "Interval": "5s"})
        );
    }
}
