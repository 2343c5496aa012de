//! The HTTP API the consul STAND-IN answers (NOT Consul's API: the endpoints
//! nodeprep, registrator and an operator use, with Consul's JSON field names
//! and status codes as documented for the v1 API):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/agent/self` | `{"Config":{"NodeName","NodeID","Datacenter","Server"},"Member":{"Name","Addr","Port":8301},"StandIn":"..."}` |
//! | `GET /v1/status/leader` | `"<addr>:8300"` once the agent has a leader (see [`Leader`]), else `""` |
//! | `GET /v1/agent/checks` | `{"<id>":{"Node","CheckID","Name","Status","Notes","Output","ServiceID","ServiceName","ServiceTags","Type"}}` |
//! | `PUT /v1/agent/check/register` | 200; (re)registers as critical unless the body gives a Status |
//! | `PUT /v1/agent/check/update/<id>` | body `{"Status","Output"}`: 200; 400 bad status; 404 unknown id |
//! | `PUT /v1/agent/check/{pass,warn,fail}/<id>[?note=]` | the note becomes Output: 200; 404 unknown id |
//! | `PUT /v1/agent/check/deregister/<id>` | 200; 404 unknown id |
//! | `PUT /v1/agent/service/register` | `{"ID","Name","Tags","Address","Port","Meta","Check","Checks"}`: 200; ID defaults to Name |
//! | `PUT /v1/agent/service/deregister/<id>` | 200 (its checks go too); 404 unknown id |
//! | `GET /v1/agent/services` | `{"<id>":{"ID","Service","Tags","Meta","Port","Address","Weights","EnableTagOverride","Datacenter"}}` |
//! | `GET /v1/catalog/services` | `{"<name>":[tags]}` |
//! | `GET /v1/catalog/service/<name>` | `[{"ID","Node","Address","Datacenter","TaggedAddresses","NodeMeta","ServiceID","ServiceName","ServiceTags","ServiceAddress","ServicePort",...}]`, `[]` if none |
//! | `GET /v1/health/service/<name>[?passing]` | `[{"Node":{..},"Service":{..},"Checks":[..]}]`; `passing`: only instances whose checks all pass |
//!
//! A known path with another method: 405. Any other path: 404. JSON keys of
//! request bodies match case-insensitively (Go's encoding/json does).
//!
//! The catalog is this one agent's: its node, the services registered with
//! it (in memory only, gone on restart), and on a server that has a leader
//! the `consul` service (Consul's leader registers it for every server, port
//! 8300). A client that joined a stand-in server also lists that server's
//! `consul` instances. Every node has Consul's `serfHealth` check
//! (passing); node-level checks (no ServiceID, like nodeprep's TTL check)
//! count for every service of the node, as in Consul: one critical node
//! check hides all of the node's services from DNS and `?passing`.
//!
//! TTL checks go critical when their TTL passes without an update, with
//! Consul's output (`agent/checks/check.go`, `CheckTTL.getExpiredOutput`):
//! `TTL expired`, or `TTL expired (last output before timeout follows): <last>`.
//! Any update (update/pass/warn/fail) restarts the timer. HTTP, TCP and the
//! other check kinds are registered but never run: they keep the status
//! they were registered with (critical by default).

use super::http::{percent_decode, query_param, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// The port Consul servers serve RPC on (what `/v1/status/leader` names).
pub const SERVER_PORT: u16 = 8300;

/// What `/v1/agent/self` and the catalog tell about the agent.
#[derive(Debug, Clone)]
pub struct Facts {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub server: bool,
    pub bind_addr: String,
}

/// Who leads this agent's cluster, as `/v1/status/leader` says.
///
/// - A server with `bootstrap_expect = 1` (or `bootstrap = true`) elects
///   itself at start: `"<bind_addr>:8300"`.
/// - A server waiting for more servers, or a client that has joined none:
///   `""` (Consul answers the same while there is no leader).
/// - A client whose `retry_join` names a stand-in server that has a leader:
///   that leader (see `consul::join`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leader {
    /// `host:port` or empty.
    pub addr: String,
    /// The `consul` service instances of the joined server's catalog (for a
    /// client), as that server's `/v1/catalog/service/consul` returned them.
    pub remote_consul: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: String,
    pub name: String,
    pub status: String,
    pub output: String,
    pub notes: String,
    pub service_id: String,
    /// `ttl`, or the kind named by the registration (`http`, `tcp`...).
    pub kind: String,
    pub ttl: Option<Duration>,
    /// When a TTL check goes critical unless updated first.
    pub expires: Option<Instant>,
    /// The last output given by an update, kept for the expiry message.
    pub last_output: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Map<String, Value>,
    pub index: u64,
}

/// One service instance as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub node: String,
    pub node_addr: String,
    /// The service's own address, "" when it has none.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<String, Check>,
    services: BTreeMap<String, Service>,
    /// Raft-ish index for CreateIndex/ModifyIndex.
    index: u64,
}

impl State {
    /// Applies TTL expiry up to `now`.
    fn expire(&mut self, now: Instant) {
        for c in self.checks.values_mut() {
            if let Some(t) = c.expires {
                if now >= t {
                    c.status = CRITICAL.to_string();
                    c.output = if c.last_output.is_empty() {
                        "TTL expired".to_string()
                    } else {
                        format!(
                            "TTL expired (last output before timeout follows): {}",
                            c.last_output
                        )
                    };
                    c.expires = None;
                }
            }
        }
    }
}

pub struct Api {
    pub facts: Facts,
    state: Mutex<State>,
    leader: Mutex<Leader>,
}

/// Registration keys that make a check (Consul requires one of them).
const CHECK_KINDS: &[(&str, &str)] = &[
    ("TTL", "ttl"),
    ("HTTP", "http"),
    ("TCP", "tcp"),
    ("UDP", "udp"),
    ("GRPC", "grpc"),
    ("H2PING", "h2ping"),
    ("Args", "script"),
    ("ScriptArgs", "script"),
    ("Script", "script"),
    ("DockerContainerID", "docker"),
    ("AliasNode", "alias"),
    ("AliasService", "alias"),
    ("OSService", "os_service"),
];

enum Route {
    Self_,
    Leader,
    Checks,
    Register,
    Update(String),
    Mark(String, &'static str),
    Deregister(String),
    ServiceRegister,
    ServiceDeregister(String),
    AgentServices,
    CatalogServices,
    CatalogService(String),
    HealthService(String),
}

type Fields = Map<String, Value>;

impl Api {
    pub fn new(facts: Facts) -> Api {
        Api {
            facts,
            state: Mutex::new(State::default()),
            leader: Mutex::new(Leader::default()),
        }
    }

    /// A copy of the registered checks, TTLs applied.
    pub fn checks(&self) -> BTreeMap<String, Check> {
        self.lock().checks.clone()
    }

    /// A copy of the registered services.
    pub fn services(&self) -> BTreeMap<String, Service> {
        self.lock().services.clone()
    }

    /// The state with TTL expiry applied up to now.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.expire(Instant::now());
        s
    }

    pub fn set_leader(&self, leader: Leader) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    pub fn leader(&self) -> Leader {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `<bind_addr>:8300`, brackets around an IPv6 address.
    pub fn own_server_addr(&self) -> String {
        let addr = &self.facts.bind_addr;
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, SERVER_PORT).to_string(),
            Err(_) => format!("{addr}:{SERVER_PORT}"),
        }
    }

    /// True when this agent is a server that leads its cluster: the catalog
    /// then has the `consul` service for it.
    fn leads(&self) -> bool {
        self.facts.server && self.leader().addr == self.own_server_addr()
    }

    /// Answers one request. `path` and `query` as sent (percent-encoded).
    pub fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Response {
        let path = percent_decode(path, false);
        let (allowed, route) = match path.as_str() {
            "/v1/agent/self" => ("GET", Route::Self_),
            "/v1/status/leader" => ("GET", Route::Leader),
            "/v1/agent/checks" => ("GET", Route::Checks),
            "/v1/agent/check/register" => ("PUT", Route::Register),
            "/v1/agent/service/register" => ("PUT", Route::ServiceRegister),
            "/v1/agent/services" => ("GET", Route::AgentServices),
            "/v1/catalog/services" => ("GET", Route::CatalogServices),
            p => {
                let after = |prefix: &str| {
                    p.strip_prefix(prefix)
                        .filter(|rest| !rest.is_empty())
                        .map(str::to_string)
                };
                if let Some(id) = after("/v1/agent/check/update/") {
                    ("PUT", Route::Update(id))
                } else if let Some(id) = after("/v1/agent/check/pass/") {
                    ("PUT", Route::Mark(id, PASSING))
                } else if let Some(id) = after("/v1/agent/check/warn/") {
                    ("PUT", Route::Mark(id, WARNING))
                } else if let Some(id) = after("/v1/agent/check/fail/") {
                    ("PUT", Route::Mark(id, CRITICAL))
                } else if let Some(id) = after("/v1/agent/check/deregister/") {
                    ("PUT", Route::Deregister(id))
                } else if let Some(id) = after("/v1/agent/service/deregister/") {
                    ("PUT", Route::ServiceDeregister(id))
                } else if let Some(name) = after("/v1/catalog/service/") {
                    ("GET", Route::CatalogService(name))
                } else if let Some(name) = after("/v1/health/service/") {
                    ("GET", Route::HealthService(name))
                } else {
                    return Response::text(
                        404,
                        format!("404 page not found: {path} (consul-standin, a test stand-in: NOT Consul)"),
                    );
                }
            }
        };
        if method != allowed {
            let mut r = Response::text(405, format!("method {method} not allowed"));
            r.headers.push(("Allow", allowed.to_string()));
            return r;
        }
        match route {
            Route::Self_ => Response::json(&self.agent_self()),
            Route::Leader => Response::json(&json!(self.leader().addr)),
            Route::Checks => Response::json(&self.checks_json()),
            Route::Register => self.register_check(body),
            Route::Update(id) => self.update(&id, body),
            Route::Mark(id, status) => {
                let note = query_param(query, "note").unwrap_or_default();
                self.set_status(&id, status, note)
            }
            Route::Deregister(id) => match self.lock().checks.remove(&id) {
                Some(_) => Response::empty(),
                None => unknown_check(&id),
            },
            Route::ServiceRegister => self.register_service(body),
            Route::ServiceDeregister(id) => {
                let mut s = self.lock();
                if s.services.remove(&id).is_none() {
                    return Response::text(
                        404,
                        format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
                    );
                }
                s.checks.retain(|_, c| c.service_id != id);
                Response::empty()
            }
            Route::AgentServices => Response::json(&self.agent_services()),
            Route::CatalogServices => Response::json(&self.catalog_services()),
            Route::CatalogService(name) => Response::json(&Value::Array(
                self.entries(&name).into_iter().map(|e| e.catalog).collect(),
            )),
            Route::HealthService(name) => {
                let passing = query
                    .split('&')
                    .any(|p| p == "passing" || p.starts_with("passing="));
                let items = self
                    .entries(&name)
                    .into_iter()
                    .filter(|e| !passing || e.statuses.iter().all(|s| s == PASSING))
                    .map(|e| e.health)
                    .collect();
                Response::json(&Value::Array(items))
            }
        }
    }

    fn agent_self(&self) -> Value {
        let f = &self.facts;
        json!({
            "Config": {
                "NodeName": f.node_name,
                "NodeID": f.node_id,
                "Datacenter": f.datacenter,
                "Server": f.server,
            },
            "Member": {
                "Name": f.node_name,
                "Addr": f.bind_addr,
                "Port": 8301,
            },
            "StandIn": "consul-standin: a test stand-in, NOT Consul",
        })
    }

    fn check_json(&self, c: &Check, services: &BTreeMap<String, Service>) -> Value {
        let svc = services.get(&c.service_id);
        json!({
            "Node": self.facts.node_name,
            "CheckID": c.id,
            "Name": c.name,
            "Status": c.status,
            "Notes": c.notes,
            "Output": c.output,
            "ServiceID": c.service_id,
            "ServiceName": svc.map(|s| s.name.as_str()).unwrap_or(""),
            "ServiceTags": svc.map(|s| s.tags.clone()).unwrap_or_default(),
            "Type": c.kind,
        })
    }

    fn checks_json(&self) -> Value {
        let s = self.lock();
        let map: Map<String, Value> = s
            .checks
            .values()
            .map(|c| (c.id.clone(), self.check_json(c, &s.services)))
            .collect();
        Value::Object(map)
    }

    fn register_check(&self, body: &[u8]) -> Response {
        let obj = match decode_object(body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let check = match parse_check(&obj, None) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut s = self.lock();
        if !check.service_id.is_empty() && !s.services.contains_key(&check.service_id) {
            return Response::text(
                400,
                format!("ServiceID {:?} does not exist", check.service_id),
            );
        }
        s.checks.insert(check.id.clone(), check);
        Response::empty()
    }

    fn register_service(&self, body: &[u8]) -> Response {
        let obj = match decode_object(body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let parsed = (|| -> Result<(Service, Vec<Check>), Response> {
            let name = text(&obj, "Name")?.unwrap_or_default();
            if name.is_empty() {
                return Err(Response::text(400, "Missing service name"));
            }
            let id = text(&obj, "ID")?
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| name.clone());
            let tags = match field(&obj, "Tags") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|t| t.as_str().map(str::to_string).ok_or(()))
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad_field("Tags", "an array of strings"))?,
                Some(_) => return Err(bad_field("Tags", "an array of strings")),
            };
            let port = match field(&obj, "Port") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| bad_field("Port", "a port number"))?,
            };
            let meta = match field(&obj, "Meta") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            let service = Service {
                id: id.clone(),
                name: name.clone(),
                tags,
                address: text(&obj, "Address")?.unwrap_or_default(),
                port,
                meta,
                index: 0,
            };
            // `Check` and `Checks` (Consul: one check is `service:<id>`,
            // several are `service:<id>:<n>`).
            let mut defs: Vec<&Fields> = Vec::new();
            if let Some(Value::Object(c)) = field(&obj, "Check") {
                defs.push(c);
            }
            if let Some(Value::Array(cs)) = field(&obj, "Checks") {
                for c in cs {
                    match c {
                        Value::Object(c) => defs.push(c),
                        _ => return Err(bad_field("Checks", "an array of objects")),
                    }
                }
            }
            let several = defs.len() > 1;
            let mut checks = Vec::new();
            for (i, def) in defs.into_iter().enumerate() {
                let default_id = if several {
                    format!("service:{id}:{}", i + 1)
                } else {
                    format!("service:{id}")
                };
                let mut c = parse_check(def, Some((&default_id, &name)))?;
                c.service_id = id.clone();
                checks.push(c);
            }
            Ok((service, checks))
        })();
        let (mut service, checks) = match parsed {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut s = self.lock();
        s.index += 1;
        service.index = s.index;
        s.checks.retain(|_, c| c.service_id != service.id);
        for c in checks {
            s.checks.insert(c.id.clone(), c);
        }
        s.services.insert(service.id.clone(), service);
        Response::empty()
    }

    fn update(&self, id: &str, body: &[u8]) -> Response {
        let obj = match decode_object(body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let status = field(&obj, "Status").and_then(Value::as_str).unwrap_or("");
        let status = match valid_status(status) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let output = match text(&obj, "Output") {
            Ok(o) => o.unwrap_or_default(),
            Err(r) => return r,
        };
        self.set_status(id, status, output)
    }

    fn set_status(&self, id: &str, status: &str, output: String) -> Response {
        match self.lock().checks.get_mut(id) {
            Some(check) => {
                check.status = status.to_string();
                check.last_output = output.clone();
                check.output = output;
                check.expires = check.ttl.map(|t| Instant::now() + t);
                Response::empty()
            }
            None => unknown_check(id),
        }
    }

    fn agent_services(&self) -> Value {
        let s = self.lock();
        let map: Map<String, Value> = s
            .services
            .values()
            .map(|svc| {
                (
                    svc.id.clone(),
                    json!({
                        "ID": svc.id,
                        "Service": svc.name,
                        "Tags": svc.tags,
                        "Meta": svc.meta,
                        "Port": svc.port,
                        "Address": svc.address,
                        "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": false,
                        "Datacenter": self.facts.datacenter,
                    }),
                )
            })
            .collect();
        Value::Object(map)
    }

    fn catalog_services(&self) -> Value {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if self.leads() || !self.leader().remote_consul.is_empty() {
            out.insert("consul".into(), Vec::new());
        }
        for svc in self.lock().services.values() {
            let tags = out.entry(svc.name.clone()).or_default();
            for t in &svc.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        json!(out)
    }

    fn node_json(&self) -> Value {
        let f = &self.facts;
        json!({
            "ID": f.node_id,
            "Node": f.node_name,
            "Address": f.bind_addr,
            "Datacenter": f.datacenter,
            "TaggedAddresses": {"lan": f.bind_addr, "lan_ipv4": f.bind_addr,
                                "wan": f.bind_addr, "wan_ipv4": f.bind_addr},
            "Meta": {"consul-network-segment": ""},
        })
    }

    fn serf_health(&self) -> Value {
        json!({
            "Node": self.facts.node_name,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
        })
    }

    /// Every instance of service `name` this agent knows, with its catalog
    /// and health JSON and the statuses of every check that counts for it
    /// (node checks and its own).
    fn entries(&self, name: &str) -> Vec<Entry> {
        let node = self.node_json();
        let mut out = Vec::new();
        let leader = self.leader();
        if name == "consul" {
            if self.leads() {
                let svc = Service {
                    id: "consul".into(),
                    name: "consul".into(),
                    tags: Vec::new(),
                    address: String::new(),
                    port: SERVER_PORT,
                    meta: Map::new(),
                    index: 1,
                };
                let s = self.lock();
                out.push(self.entry(&node, &svc, &s));
            } else {
                for remote in &leader.remote_consul {
                    out.push(Entry {
                        catalog: remote.clone(),
                        health: json!({"Node": {"Node": remote["Node"], "Address": remote["Address"],
                                                "Datacenter": remote["Datacenter"]},
                                       "Service": {"ID": "consul", "Service": "consul", "Tags": [],
                                                   "Address": "", "Port": remote["ServicePort"]},
                                       "Checks": []}),
                        statuses: Vec::new(),
                        instance: Instance {
                            node: remote["Node"].as_str().unwrap_or("").to_string(),
                            node_addr: remote["Address"].as_str().unwrap_or("").to_string(),
                            address: String::new(),
                            port: remote["ServicePort"].as_u64().unwrap_or(0) as u16,
                            tags: Vec::new(),
                        },
                    });
                }
            }
            return out;
        }
        let s = self.lock();
        for svc in s.services.values().filter(|svc| svc.name == name) {
            out.push(self.entry(&node, svc, &s));
        }
        out
    }

    fn entry(&self, node: &Value, svc: &Service, s: &State) -> Entry {
        let f = &self.facts;
        let mut checks = vec![self.serf_health()];
        let mut statuses = vec![PASSING.to_string()];
        for c in s
            .checks
            .values()
            .filter(|c| c.service_id.is_empty() || c.service_id == svc.id)
        {
            checks.push(self.check_json(c, &s.services));
            statuses.push(c.status.clone());
        }
        let weights = json!({"Passing": 1, "Warning": 1});
        let mut catalog = json!({
            "ID": f.node_id,
            "Node": f.node_name,
            "Address": f.bind_addr,
            "Datacenter": f.datacenter,
            "ServiceKind": "",
            "ServiceID": svc.id,
            "ServiceName": svc.name,
            "ServiceTags": svc.tags,
            "ServiceAddress": svc.address,
            "ServiceWeights": weights,
            "ServiceMeta": svc.meta,
            "ServicePort": svc.port,
            "ServiceEnableTagOverride": false,
            "CreateIndex": svc.index,
            "ModifyIndex": svc.index,
        });
        catalog["TaggedAddresses"] = node["TaggedAddresses"].clone();
        catalog["NodeMeta"] = node["Meta"].clone();
        let health = json!({
            "Node": node,
            "Service": {
                "ID": svc.id,
                "Service": svc.name,
                "Tags": svc.tags,
                "Address": svc.address,
                "Meta": svc.meta,
                "Port": svc.port,
                "Weights": weights,
                "EnableTagOverride": false,
                "CreateIndex": svc.index,
                "ModifyIndex": svc.index,
            },
            "Checks": checks,
        });
        Entry {
            catalog,
            health,
            statuses,
            instance: Instance {
                node: f.node_name.clone(),
                node_addr: f.bind_addr.clone(),
                address: svc.address.clone(),
                port: svc.port,
                tags: svc.tags.clone(),
            },
        }
    }

    /// What DNS answers for `<tag>.<name>.service`: instances without any
    /// critical check (Consul's DNS default, `only_passing = false`), tag
    /// matched case-insensitively.
    pub fn dns_instances(&self, name: &str, tag: Option<&str>) -> Vec<Instance> {
        let wanted = name.to_ascii_lowercase();
        let mut names: Vec<String> = self
            .lock()
            .services
            .values()
            .map(|s| s.name.clone())
            .filter(|n| n.to_ascii_lowercase() == wanted)
            .collect();
        if wanted == "consul" {
            names.push("consul".into());
        }
        names.dedup();
        names
            .iter()
            .flat_map(|n| self.entries(n))
            .filter(|e| !e.statuses.iter().any(|s| s == CRITICAL))
            .filter(|e| {
                tag.is_none_or(|t| e.instance.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
            })
            .map(|e| e.instance)
            .collect()
    }
}

struct Entry {
    catalog: Value,
    health: Value,
    statuses: Vec<String>,
    instance: Instance,
}

fn bad_field(name: &str, want: &str) -> Response {
    Response::text(400, format!("Request decode failed: {name} must be {want}"))
}

fn text(obj: &Fields, key: &str) -> Result<Option<String>, Response> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Response::text(
            400,
            format!("Request decode failed: {key} must be a string, got {other}"),
        )),
    }
}

/// A check definition (`/v1/agent/check/register`, or a service's
/// `Check`/`Checks` with `service` = (default id, service name)).
fn parse_check(obj: &Fields, service: Option<(&str, &str)>) -> Result<Check, Response> {
    let name = match (text(obj, "Name")?.filter(|n| !n.is_empty()), service) {
        (Some(n), _) => n,
        (None, Some((_, svc))) => format!("Service '{svc}' check"),
        (None, None) => return Err(Response::text(400, "Missing check name")),
    };
    let id = match (text(obj, "ID")?, text(obj, "CheckID")?, service) {
        (Some(id), _, _) if !id.is_empty() => id,
        (_, Some(id), _) if !id.is_empty() => id,
        (_, _, Some((default_id, _))) => default_id.to_string(),
        _ => name.clone(),
    };
    let ttl = match text(obj, "TTL")? {
        Some(t) => {
            let secs = go_duration(&t)
                .map_err(|e| Response::text(400, format!("Request decode failed: time: {e}")))?;
            Some(Duration::from_secs_f64(secs.max(0.0)))
        }
        None => None,
    };
    let Some(kind) = CHECK_KINDS
        .iter()
        .find(|(k, _)| field(obj, k).is_some_and(|v| !v.is_null()))
        .map(|(_, kind)| kind.to_string())
    else {
        return Err(Response::text(
            400,
            "Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/H2PING/GRPC/AliasNode/AliasService/OSService",
        ));
    };
    let status = text(obj, "Status")?.unwrap_or_default();
    let status = if status.is_empty() {
        CRITICAL.to_string()
    } else {
        valid_status(&status)?.to_string()
    };
    Ok(Check {
        id,
        name,
        status,
        output: String::new(),
        notes: text(obj, "Notes")?.unwrap_or_default(),
        service_id: text(obj, "ServiceID")?.unwrap_or_default(),
        kind,
        expires: ttl.map(|t| Instant::now() + t),
        ttl,
        last_output: String::new(),
    })
}

fn unknown_check(id: &str) -> Response {
    Response::text(
        404,
        format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."),
    )
}

fn valid_status(s: &str) -> Result<&'static str, Response> {
    [PASSING, WARNING, CRITICAL]
        .into_iter()
        .find(|v| *v == s)
        .ok_or_else(|| Response::text(400, format!("Invalid check status: {s:?}")))
}

fn decode_object(body: &[u8]) -> Result<Fields, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Response::text(
            400,
            "Request decode failed: EOF (empty body)",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(Response::text(
            400,
            format!("Request decode failed: expected a JSON object, got {other}"),
        )),
        Err(e) => Err(Response::text(400, format!("Request decode failed: {e}"))),
    }
}

/// A key of a request body, matched case-insensitively (exact match first).
fn field<'a>(obj: &'a Fields, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl super::dns::Lookup for Api {
    fn service(&self, service: &str, tag: Option<&str>) -> Vec<super::dns::Target> {
        self.dns_instances(service, tag)
            .into_iter()
            .map(|i| super::dns::Target {
                node: i.node,
                node_addr: i.node_addr.parse().ok(),
                addr: i.address.parse().ok(),
                port: i.port,
            })
            .collect()
    }

    fn node(&self, node: &str) -> Option<Option<std::net::IpAddr>> {
        node.eq_ignore_ascii_case(&self.facts.node_name)
            .then(|| self.facts.bind_addr.parse().ok())
    }
}

/// Checks Go's `time.ParseDuration` syntax (`10s`, `1m30s`, `1.5h`, `0`)
/// and returns the duration in seconds.
pub fn go_duration(s: &str) -> Result<f64, String> {
    let invalid = || format!("invalid duration {s:?}");
    let (sign, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(n);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let u = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(u);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {s:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = next;
    }
    Ok(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Api {
        Api::new(Facts {
            node_name: "host-a".into(),
            node_id: "7f3b2c1e-0000-4000-8000-000000000001".into(),
            datacenter: "dc1".into(),
            server: true,
            bind_addr: "192.0.2.10".into(),
        })
    }

    fn led() -> Api {
        let a = api();
        a.set_leader(Leader {
            addr: a.own_server_addr(),
            ..Leader::default()
        });
        a
    }

    fn call(api: &Api, method: &str, target: &str, body: &str) -> (u16, String) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let r = api.handle(method, path, query, body.as_bytes());
        (r.status, String::from_utf8(r.body).unwrap())
    }

    fn json_of(api: &Api, target: &str) -> Value {
        let (status, body) = call(api, "GET", target, "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn self_and_leader() {
        let a = api();
        let me = json_of(&a, "/v1/agent/self");
        assert_eq!(me["Config"]["NodeName"], "host-a");
        assert_eq!(me["Config"]["Datacenter"], "dc1");
        assert_eq!(me["Config"]["Server"], true);
        assert_eq!(me["Member"]["Addr"], "192.0.2.10");
        assert!(me["StandIn"].as_str().unwrap().contains("NOT Consul"));
        // No leader until one is set (a server bootstrapping, a client joining).
        assert_eq!(json_of(&a, "/v1/status/leader"), "");
        assert_eq!(json_of(&a, "/v1/catalog/services"), json!({}));
        let a = led();
        assert_eq!(json_of(&a, "/v1/status/leader?stale"), "192.0.2.10:8300");
        assert_eq!(json_of(&a, "/v1/catalog/services"), json!({"consul": []}));
        let v6 = Api::new(Facts {
            bind_addr: "2001:db8::1".into(),
            ..a.facts.clone()
        });
        assert_eq!(v6.own_server_addr(), "[2001:db8::1]:8300");
    }

    #[test]
    fn check_lifecycle() {
        let a = api();
        assert_eq!(json_of(&a, "/v1/agent/checks"), json!({}));
        // nodeprep's registration: ID, Name, TTL, Notes.
        let (s, b) = call(
            &a,
            "PUT",
            "/v1/agent/check/register",
            r#"{"ID":"nodeprep","Name":"nodeprep","TTL":"90s","Notes":"n"}"#,
        );
        assert_eq!((s, b.as_str()), (200, ""));
        let checks = json_of(&a, "/v1/agent/checks");
        assert_eq!(
            checks["nodeprep"],
            json!({"Node":"host-a","CheckID":"nodeprep","Name":"nodeprep","Status":"critical",
                   "Notes":"n","Output":"","ServiceID":"","ServiceName":"","ServiceTags":[],
                   "Type":"ttl"})
        );
        let (s, _) = call(
            &a,
            "PUT",
            "/v1/agent/check/update/nodeprep",
            r#"{"Status":"passing","Output":"all 9 resources ok"}"#,
        );
        assert_eq!(s, 200);
        let c = &a.checks()["nodeprep"];
        assert_eq!(
            (c.status.as_str(), c.output.as_str()),
            ("passing", "all 9 resources ok")
        );

        let (s, b) = call(
            &a,
            "PUT",
            "/v1/agent/check/update/nodeprep",
            r#"{"Status":"ok"}"#,
        );
        assert_eq!((s, b.as_str()), (400, "Invalid check status: \"ok\"\n"));
        let (s, b) = call(
            &a,
            "PUT",
            "/v1/agent/check/update/other",
            r#"{"Status":"passing"}"#,
        );
        assert_eq!(s, 404);
        assert!(b.starts_with("Unknown check ID \"other\""), "{b}");
        let (s, _) = call(&a, "PUT", "/v1/agent/check/update/nodeprep", "{");
        assert_eq!(s, 400);

        call(
            &a,
            "PUT",
            "/v1/agent/check/warn/nodeprep?note=disk+80%25",
            "",
        );
        let c = &a.checks()["nodeprep"];
        assert_eq!(
            (c.status.as_str(), c.output.as_str()),
            ("warning", "disk 80%")
        );
        call(&a, "PUT", "/v1/agent/check/fail/nodeprep", "");
        assert_eq!(a.checks()["nodeprep"].status, "critical");
        assert_eq!(a.checks()["nodeprep"].output, "");
        call(&a, "PUT", "/v1/agent/check/pass/nodeprep?note=ok", "");
        assert_eq!(a.checks()["nodeprep"].status, "passing");
        assert_eq!(call(&a, "PUT", "/v1/agent/check/pass/nope", "").0, 404);

        // Registering again resets it (critical, empty output).
        call(
            &a,
            "PUT",
            "/v1/agent/check/register",
            r#"{"ID":"nodeprep","Name":"nodeprep","TTL":"90s"}"#,
        );
        assert_eq!(a.checks()["nodeprep"].status, "critical");

        assert_eq!(
            call(&a, "PUT", "/v1/agent/check/deregister/nodeprep", "").0,
            200
        );
        assert_eq!(
            call(&a, "PUT", "/v1/agent/check/deregister/nodeprep", "").0,
            404
        );
        assert_eq!(json_of(&a, "/v1/agent/checks"), json!({}));
    }

    #[test]
    fn ttl_checks_expire_and_updates_restart_the_timer() {
        let a = api();
        let reg = |body: &str| call(&a, "PUT", "/v1/agent/check/register", body).0;
        assert_eq!(
            reg(r#"{"ID":"short","Name":"short","TTL":"150ms","Status":"passing"}"#),
            200
        );
        assert_eq!(
            reg(r#"{"ID":"long","Name":"long","TTL":"1h","Status":"passing"}"#),
            200
        );
        assert_eq!(a.checks()["short"].status, "passing");
        std::thread::sleep(Duration::from_millis(250));
        let checks = json_of(&a, "/v1/agent/checks");
        assert_eq!(checks["short"]["Status"], "critical");
        assert_eq!(checks["short"]["Output"], "TTL expired");
        assert_eq!(checks["long"]["Status"], "passing");
        // An update revives it and restarts the timer; the next expiry
        // quotes the last output.
        call(&a, "PUT", "/v1/agent/check/pass/short?note=fine", "");
        assert_eq!(a.checks()["short"].status, "passing");
        std::thread::sleep(Duration::from_millis(100));
        call(
            &a,
            "PUT",
            "/v1/agent/check/update/short",
            r#"{"Status":"passing","Output":"still fine"}"#,
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            a.checks()["short"].status,
            "passing",
            "timer restarted by the update"
        );
        std::thread::sleep(Duration::from_millis(150));
        let c = &a.checks()["short"];
        assert_eq!(
            (c.status.as_str(), c.output.as_str()),
            (
                "critical",
                "TTL expired (last output before timeout follows): still fine"
            )
        );
    }

    #[test]
    fn registration_variants() {
        let a = api();
        let reg = |body: &str| call(&a, "PUT", "/v1/agent/check/register", body);
        assert_eq!(reg(r#"{"Name":"by-name","TTL":"10s"}"#).0, 200);
        assert_eq!(reg(r#"{"CheckID":"cid","Name":"n","TTL":"1m30s"}"#).0, 200);
        assert_eq!(reg(r#"{"name":"lower","ttl":"5s","notes":"x"}"#).0, 200);
        assert_eq!(reg(r#"{"Name":"s","TTL":"5s","Status":"passing"}"#).0, 200);
        assert_eq!(
            reg(r#"{"Name":"h","HTTP":"http://127.0.0.1/","Interval":"10s"}"#).0,
            200
        );
        let checks = a.checks();
        assert_eq!(
            checks.keys().collect::<Vec<_>>(),
            ["by-name", "cid", "h", "lower", "s"]
        );
        assert_eq!(checks["lower"].notes, "x");
        assert_eq!(checks["s"].status, "passing");
        assert_eq!(checks["h"].kind, "http");

        for (body, message) in [
            (r#"{"TTL":"10s"}"#, "Missing check name"),
            (r#"{"Name":"x"}"#, "Must provide TTL"),
            (r#"{"Name":"x","TTL":"10"}"#, "missing unit"),
            (r#"{"Name":"x","TTL":"soon"}"#, "invalid duration"),
            (
                r#"{"Name":"x","TTL":"10s","Status":"up"}"#,
                "Invalid check status",
            ),
            (
                r#"{"Name":"x","TTL":"10s","ServiceID":"web"}"#,
                "ServiceID \"web\" does not exist",
            ),
            (r#"{"Name":7,"TTL":"10s"}"#, "Name must be a string"),
            ("[]", "expected a JSON object"),
            ("", "EOF"),
        ] {
            let (s, b) = reg(body);
            assert_eq!(s, 400, "{body}: {b}");
            assert!(b.contains(message), "{body}: {b}");
        }
    }

    /// What registrator v7's consul adapter sends (consul/consul.go:
    /// AgentServiceRegistration with ID, Name, Port, Tags, Address, Check).
    const WEB: &str = r#"{"ID":"host-a:web-1:8080","Name":"web","Tags":["v1","blue"],"Port":18080,"Address":"192.0.2.10","Check":null}"#;

    #[test]
    fn services_catalog_and_health_json() {
        let a = led();
        assert_eq!(
            call(&a, "PUT", "/v1/agent/service/register", WEB),
            (200, String::new())
        );
        assert_eq!(
            call(
                &a,
                "PUT",
                "/v1/agent/service/register",
                r#"{"Name":"db","Port":5432,"Check":{"TTL":"30s"}}"#
            )
            .0,
            200
        );
        let services = json_of(&a, "/v1/agent/services");
        assert_eq!(
            services["host-a:web-1:8080"],
            json!({"ID":"host-a:web-1:8080","Service":"web","Tags":["v1","blue"],"Meta":{},
                   "Port":18080,"Address":"192.0.2.10","Weights":{"Passing":1,"Warning":1},
                   "EnableTagOverride":false,"Datacenter":"dc1"})
        );
        assert_eq!(services["db"]["ID"], "db", "ID defaults to Name");
        assert_eq!(
            json_of(&a, "/v1/catalog/services"),
            json!({"consul": [], "db": [], "web": ["v1", "blue"]})
        );
        let web = json_of(&a, "/v1/catalog/service/web");
        assert_eq!(web.as_array().unwrap().len(), 1);
        let w = &web[0];
        for (k, v) in [
            ("Node", json!("host-a")),
            ("Address", json!("192.0.2.10")),
            ("Datacenter", json!("dc1")),
            ("ServiceID", json!("host-a:web-1:8080")),
            ("ServiceName", json!("web")),
            ("ServiceAddress", json!("192.0.2.10")),
            ("ServicePort", json!(18080)),
            ("ServiceTags", json!(["v1", "blue"])),
            ("ID", json!("7f3b2c1e-0000-4000-8000-000000000001")),
        ] {
            assert_eq!(w[k], v, "{k}: {w}");
        }
        assert_eq!(json_of(&a, "/v1/catalog/service/nope"), json!([]));
        let consul = json_of(&a, "/v1/catalog/service/consul");
        assert_eq!(
            (
                consul[0]["ServicePort"].clone(),
                consul[0]["ServiceAddress"].clone()
            ),
            (json!(8300), json!(""))
        );

        // Health: node, service and every check that counts (serfHealth,
        // node checks, the service's own).
        let h = json_of(&a, "/v1/health/service/db");
        assert_eq!(h[0]["Node"]["Node"], "host-a");
        assert_eq!(h[0]["Service"]["ID"], "db");
        assert_eq!(h[0]["Service"]["Port"], 5432);
        let ids: Vec<&str> = h[0]["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["serfHealth", "service:db"]);
        assert_eq!(h[0]["Checks"][1]["Name"], "Service 'db' check");
        assert_eq!(h[0]["Checks"][1]["ServiceName"], "db");
        assert_eq!(h[0]["Checks"][1]["Status"], "critical");
        assert_eq!(json_of(&a, "/v1/health/service/db?passing"), json!([]));
        assert_eq!(
            json_of(&a, "/v1/health/service/web?passing")
                .as_array()
                .unwrap()
                .len(),
            1
        );
        call(&a, "PUT", "/v1/agent/check/pass/service:db", "");
        assert_eq!(
            json_of(&a, "/v1/health/service/db?passing=1")
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // A node check counts for every service of the node.
        call(
            &a,
            "PUT",
            "/v1/agent/check/register",
            r#"{"Name":"nodeprep","TTL":"1h","Status":"warning"}"#,
        );
        assert_eq!(json_of(&a, "/v1/health/service/web?passing"), json!([]));
        assert_eq!(
            a.dns_instances("WEB", None).len(),
            1,
            "warning still in DNS"
        );
        call(&a, "PUT", "/v1/agent/check/fail/nodeprep", "");
        assert!(
            a.dns_instances("web", None).is_empty(),
            "critical node check hides it"
        );
        assert!(a.dns_instances("consul", None).is_empty());
        call(&a, "PUT", "/v1/agent/check/deregister/nodeprep", "");
        assert_eq!(a.dns_instances("web", Some("BLUE")).len(), 1);
        assert!(a.dns_instances("web", Some("green")).is_empty());

        // Several checks: service:<id>:<n>; deregistering removes them.
        call(
            &a,
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"multi","Checks":[{"TTL":"1m"},{"HTTP":"http://x/","Interval":"10s"}]}"#,
        );
        assert!(
            a.checks().contains_key("service:multi:1")
                && a.checks().contains_key("service:multi:2")
        );
        assert_eq!(
            call(&a, "PUT", "/v1/agent/service/deregister/multi", "").0,
            200
        );
        assert!(!a.checks().keys().any(|k| k.starts_with("service:multi")));
        let (s, b) = call(&a, "PUT", "/v1/agent/service/deregister/multi", "");
        assert_eq!(s, 404);
        assert!(b.starts_with("Unknown service ID \"multi\""), "{b}");
        assert_eq!(
            call(&a, "PUT", "/v1/agent/service/register", r#"{"Port":1}"#),
            (400, "Missing service name\n".into())
        );
        assert_eq!(
            call(
                &a,
                "PUT",
                "/v1/agent/service/register",
                r#"{"Name":"x","Port":"80"}"#
            )
            .0,
            400
        );
        assert_eq!(
            call(
                &a,
                "PUT",
                "/v1/agent/service/deregister/host-a:web-1:8080",
                ""
            )
            .0,
            200
        );
        assert_eq!(json_of(&a, "/v1/catalog/service/web"), json!([]));
    }

    #[test]
    fn methods_and_unknown_paths() {
        let a = api();
        let r = a.handle("POST", "/v1/agent/check/register", "", b"{}");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "PUT".to_string())]);
        assert_eq!(call(&a, "PUT", "/v1/agent/self", "").0, 405);
        assert_eq!(call(&a, "GET", "/v1/agent/service/register", "").0, 405);
        for path in ["/", "/v1/agent/selfish", "/v1/kv/x", "/v1/catalog/service/"] {
            let (s, b) = call(&a, "GET", path, "");
            assert_eq!(s, 404, "{path}");
            assert!(b.contains("NOT Consul"), "{b}");
        }
        // Path escapes are decoded before routing, as Go's net/http does.
        call(
            &a,
            "PUT",
            "/v1/agent/check/register",
            r#"{"ID":"service:web","Name":"w","TTL":"5s"}"#,
        );
        assert_eq!(
            call(&a, "PUT", "/v1/agent/check/pass/service%3Aweb", "").0,
            200
        );
    }

    #[test]
    fn a_client_lists_the_consul_service_of_the_server_it_joined() {
        let a = Api::new(Facts {
            server: false,
            ..api().facts
        });
        assert!(a.dns_instances("consul", None).is_empty());
        a.set_leader(Leader {
            addr: "192.0.2.20:8300".into(),
            remote_consul: vec![
                json!({"Node": "srv", "Address": "192.0.2.20", "Datacenter": "dc1",
                                       "ServiceID": "consul", "ServicePort": 8300}),
            ],
        });
        assert_eq!(json_of(&a, "/v1/status/leader"), "192.0.2.20:8300");
        let i = a.dns_instances("consul", None);
        assert_eq!(
            (i[0].node.as_str(), i[0].node_addr.as_str()),
            ("srv", "192.0.2.20")
        );
        assert_eq!(json_of(&a, "/v1/catalog/service/consul")[0]["Node"], "srv");
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("0", 0.0),
            ("10s", 10.0),
            ("1m30s", 90.0),
            ("1.5h", 5400.0),
            ("300ms", 0.3),
            ("-2m", -120.0),
            ("1h2m3s4ms", 3723.004),
        ] {
            assert!((go_duration(s).unwrap() - secs).abs() < 1e-9, "{s}");
        }
        for s in ["", "s", "10", "1x", "1..2s", "-", ".s", "1s2"] {
            assert!(go_duration(s).is_err(), "{s}");
        }
    }
}
