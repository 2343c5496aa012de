//! The HTTP API the consul STAND-IN answers (NOT Consul's API: a handful of
//! endpoints, shaped like Consul's, that nodeprep calls):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/agent/self` | `{"Config":{"NodeName","NodeID","Datacenter","Server"},"Member":{"Name","Addr","Port":8301},"StandIn":"..."}` |
//! | `GET /v1/status/leader` | `"<bind_addr>:8300"`: a one-server cluster, always led by itself |
//! | `GET /v1/agent/checks` | `{"<id>":{"Node","CheckID","Name","Status","Notes","Output","ServiceID","ServiceName","Type"}}` |
//! | `PUT /v1/agent/check/register` | 200, empty; (re)registers as critical unless the body gives a Status |
//! | `PUT /v1/agent/check/update/<id>` | body `{"Status","Output"}`: 200; 400 bad status; 404 unknown id |
//! | `PUT /v1/agent/check/{pass,warn,fail}/<id>[?note=]` | the note becomes Output: 200; 404 unknown id |
//! | `PUT /v1/agent/check/deregister/<id>` | 200; 404 unknown id |
//!
//! A known path with another method: 405 (as Consul). Any other path: 404.
//! JSON keys of request bodies match case-insensitively (Go's encoding/json
//! does), and a check's id is `ID` (Consul's field, what nodeprep sends) or
//! `CheckID`, defaulting to `Name`. TTLs are checked for Go duration syntax
//! but never expire: a check keeps its status until updated.

use super::http::{percent_decode, query_param, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// What `/v1/agent/self` tells about the agent.
#[derive(Debug, Clone)]
pub struct Facts {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub server: bool,
    pub bind_addr: String,
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
}

pub struct Api {
    pub facts: Facts,
    checks: Mutex<BTreeMap<String, Check>>,
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
    ("DockerContainerID", "docker"),
    ("AliasNode", "alias"),
    ("AliasService", "alias"),
    ("OSService", "os_service"),
];

impl Api {
    pub fn new(facts: Facts) -> Api {
        Api {
            facts,
            checks: Mutex::new(BTreeMap::new()),
        }
    }

    /// A copy of the registered checks.
    pub fn checks(&self) -> BTreeMap<String, Check> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Check>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request. `path` and `query` as sent (percent-encoded).
    pub fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Response {
        let path = percent_decode(path, false);
        let (allowed, result) = match path.as_str() {
            "/v1/agent/self" => ("GET", Route::Self_),
            "/v1/status/leader" => ("GET", Route::Leader),
            "/v1/agent/checks" => ("GET", Route::Checks),
            "/v1/agent/check/register" => ("PUT", Route::Register),
            p => {
                let id_after = |prefix: &str| p.strip_prefix(prefix).map(str::to_string);
                if let Some(id) = id_after("/v1/agent/check/update/") {
                    ("PUT", Route::Update(id))
                } else if let Some(id) = id_after("/v1/agent/check/pass/") {
                    ("PUT", Route::Mark(id, PASSING))
                } else if let Some(id) = id_after("/v1/agent/check/warn/") {
                    ("PUT", Route::Mark(id, WARNING))
                } else if let Some(id) = id_after("/v1/agent/check/fail/") {
                    ("PUT", Route::Mark(id, CRITICAL))
                } else if let Some(id) = id_after("/v1/agent/check/deregister/") {
                    ("PUT", Route::Deregister(id))
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
        match result {
            Route::Self_ => Response::json(&self.agent_self()),
            Route::Leader => Response::json(&json!(self.leader())),
            Route::Checks => Response::json(&self.checks_json()),
            Route::Register => self.register(body),
            Route::Update(id) => self.update(&id, body),
            Route::Mark(id, status) => {
                let note = query_param(query, "note").unwrap_or_default();
                self.set_status(&id, status, note)
            }
            Route::Deregister(id) => match self.lock().remove(&id) {
                Some(_) => Response::empty(),
                None => unknown_check(&id),
            },
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

    /// `<bind_addr>:8300`, brackets around an IPv6 address.
    pub fn leader(&self) -> String {
        let addr = &self.facts.bind_addr;
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, 8300).to_string(),
            Err(_) => format!("{addr}:8300"),
        }
    }

    fn checks_json(&self) -> Value {
        let node = &self.facts.node_name;
        let map: Map<String, Value> = self
            .lock()
            .values()
            .map(|c| {
                (
                    c.id.clone(),
                    json!({
                        "Node": node,
                        "CheckID": c.id,
                        "Name": c.name,
                        "Status": c.status,
                        "Notes": c.notes,
                        "Output": c.output,
                        "ServiceID": c.service_id,
                        "ServiceName": "",
                        "Type": c.kind,
                    }),
                )
            })
            .collect();
        Value::Object(map)
    }

    fn register(&self, body: &[u8]) -> Response {
        let obj = match decode_object(body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let text = |key: &str| -> Result<Option<String>, Response> {
            match field(&obj, key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(Response::text(
                    400,
                    format!("Request decode failed: {key} must be a string, got {other}"),
                )),
            }
        };
        let get = || -> Result<Check, Response> {
            let name = text("Name")?.unwrap_or_default();
            if name.is_empty() {
                return Err(Response::text(400, "Missing check name"));
            }
            let id = match text("ID")? {
                Some(id) if !id.is_empty() => id,
                _ => text("CheckID")?
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| name.clone()),
            };
            if let Some(ttl) = text("TTL")? {
                go_duration(&ttl).map_err(|e| {
                    Response::text(400, format!("Request decode failed: time: {e}"))
                })?;
            }
            let Some(kind) = CHECK_KINDS
                .iter()
                .find(|(k, _)| field(&obj, k).is_some_and(|v| !v.is_null()))
                .map(|(_, kind)| kind.to_string())
            else {
                return Err(Response::text(
                    400,
                    "Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/H2PING/GRPC/AliasNode/AliasService/OSService",
                ));
            };
            let status = text("Status")?.unwrap_or_default();
            let status = if status.is_empty() {
                CRITICAL.to_string()
            } else {
                valid_status(&status)?.to_string()
            };
            let service_id = text("ServiceID")?.unwrap_or_default();
            if !service_id.is_empty() {
                return Err(Response::text(
                    400,
                    format!(
                        "ServiceID {service_id:?} does not exist (the stand-in has no services)"
                    ),
                ));
            }
            Ok(Check {
                id,
                name,
                status,
                output: String::new(),
                notes: text("Notes")?.unwrap_or_default(),
                service_id,
                kind,
            })
        };
        match get() {
            Ok(check) => {
                self.lock().insert(check.id.clone(), check);
                Response::empty()
            }
            Err(r) => r,
        }
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
        let output = match field(&obj, "Output") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Response::text(
                    400,
                    format!("Request decode failed: Output must be a string, got {other}"),
                )
            }
        };
        self.set_status(id, status, output)
    }

    fn set_status(&self, id: &str, status: &str, output: String) -> Response {
        match self.lock().get_mut(id) {
            Some(check) => {
                check.status = status.to_string();
                check.output = output;
                Response::empty()
            }
            None => unknown_check(id),
        }
    }
}

enum Route {
    Self_,
    Leader,
    Checks,
    Register,
    Update(String),
    Mark(String, &'static str),
    Deregister(String),
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

fn decode_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
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
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
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
        assert_eq!(json_of(&a, "/v1/status/leader?stale"), "192.0.2.10:8300");
        let v6 = Api::new(Facts {
            bind_addr: "2001:db8::1".into(),
            ..a.facts.clone()
        });
        assert_eq!(v6.leader(), "[2001:db8::1]:8300");
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
                   "Notes":"n","Output":"","ServiceID":"","ServiceName":"","Type":"ttl"})
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
                "does not exist",
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

    #[test]
    fn methods_and_unknown_paths() {
        let a = api();
        let r = a.handle("POST", "/v1/agent/check/register", "", b"{}");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "PUT".to_string())]);
        assert_eq!(call(&a, "PUT", "/v1/agent/self", "").0, 405);
        for path in ["/", "/v1/agent/services", "/v1/agent/selfish", "/v1/kv/x"] {
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
