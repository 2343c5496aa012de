//! Live probes of the whole chain: the agent answers HTTP, DNS answers through
//! dnsmasq, registrator is not crash-looping, and the agent's API is not
//! exposed on the host's routable address. Each has a short timeout, so a
//! hung service never hangs an audit. A probe that finds a problem is
//! `drift`; one nodeprep could not run at all is `failed`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::config::{Config, DnsBackend};
use crate::engine::Host;
use crate::report::{ResourceReport, Status};

/// One live probe: an id (shown in reports, taken by `--only`/`--skip`)
/// and the check itself.
pub struct Probe {
    pub id: &'static str,
    check: fn(&Host) -> Result<Finding>,
}

/// Every probe, in report order. The CLI's ids come from here and from the
/// resource table.
pub static TABLE: [Probe; 6] = [
    Probe {
        id: "consul-http",
        check: consul_http,
    },
    Probe {
        id: "consul-dns",
        check: consul_dns,
    },
    Probe {
        id: "host-dns",
        check: host_dns,
    },
    Probe {
        id: "upstream-dns",
        check: upstream_dns,
    },
    // Same name as the resource: the probe is about the running
    // container's health, the resource about its spec.
    Probe {
        id: "registrator",
        check: registrator,
    },
    Probe {
        id: "consul-exposure",
        check: consul_exposure,
    },
];

/// What a probe found: fine, a problem with the host (drift), or nothing
/// to look at (skipped, with the reason).
enum Finding {
    Ok(String),
    Problem(String),
    Skipped(String),
}

pub fn run(host: &Host, probes: &[&Probe]) -> Vec<ResourceReport> {
    probes
        .iter()
        .map(|p| {
            let (status, detail) = if host.offline() {
                (
                    Status::Skipped,
                    "live probes not run under --root".to_string(),
                )
            } else {
                match (p.check)(host) {
                    Ok(Finding::Ok(d)) => (Status::Ok, d),
                    Ok(Finding::Problem(d)) => (Status::Drift, d),
                    Ok(Finding::Skipped(d)) => (Status::Skipped, d),
                    Err(e) => (Status::Failed, format!("{e:#}")),
                }
            };
            ResourceReport {
                id: p.id,
                status,
                detail,
                actions: Vec::new(),
                diff: None,
            }
        })
        .collect()
}

fn timeout(host: &Host) -> Duration {
    Duration::from_millis(host.cfg.probes.timeout_ms)
}

/// A URL of the agent's HTTP API (`http://[v6]:port/...` for IPv6).
pub fn agent_url(cfg: &Config, path: &str) -> String {
    format!("http://{}{path}", cfg.agent_http())
}

/// A ureq agent that never waits longer than the probe timeout in total.
pub fn http(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get_json(agent: &ureq::Agent, url: &str) -> Result<serde_json::Value> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("GET {url}: reading the body"))?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON"))
}

fn consul_http(host: &Host) -> Result<Finding> {
    let agent = http(timeout(host));
    let check = || -> Result<String> {
        let me = get_json(&agent, &agent_url(&host.cfg, "/v1/agent/self"))?;
        let node = me["Config"]["NodeName"].as_str().unwrap_or("?").to_string();
        let dc = me["Config"]["Datacenter"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let leader = get_json(&agent, &agent_url(&host.cfg, "/v1/status/leader"))?;
        let leader = leader.as_str().unwrap_or_default().to_string();
        if leader.is_empty() {
            bail!("node {node}, datacenter {dc}: the agent answers but the cluster has no leader");
        }
        Ok(format!("node {node}, datacenter {dc}, leader {leader}"))
    };
    Ok(match check() {
        Ok(d) => Finding::Ok(d),
        Err(e) => Finding::Problem(format!(
            "the Consul HTTP API does not answer properly: {e:#}"
        )),
    })
}

fn consul_dns(host: &Host) -> Result<Finding> {
    let name = format!("consul.service.{}.", host.cfg.consul.domain.0);
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    // Through the backend on both addresses it answers on: the link address
    // for containers, and loopback (dnsmasq on 127.0.0.1, or resolved's stub
    // on 127.0.0.53) for the host.
    let local = match host.cfg.dns.backend {
        DnsBackend::Dnsmasq => Ipv4Addr::LOCALHOST,
        DnsBackend::Resolved => Ipv4Addr::new(127, 0, 0, 53),
    };
    for server in [host.cfg.link.address.ip(), IpAddr::V4(local)] {
        let addr = SocketAddr::new(server, 53);
        match query_a(addr, &name, timeout(host)) {
            Ok(ips) if !ips.is_empty() => {
                let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                parts.push(format!("{addr} -> {}", ips.join(" ")));
            }
            Ok(_) => problems.push(format!("{addr}: no A record for {name}")),
            Err(e) => problems.push(format!("{addr}: {e:#}")),
        }
    }
    Ok(if problems.is_empty() {
        Finding::Ok(format!("{name} {}", parts.join("; ")))
    } else {
        Finding::Problem(format!("{name} does not resolve: {}", problems.join("; ")))
    })
}

/// The host's own resolver, as host processes use it: the servers of
/// `/etc/resolv.conf`, in order, the first that answers deciding (glibc's
/// rule; resolved's stub is one such server).
fn host_dns(host: &Host) -> Result<Finding> {
    let name = format!("consul.service.{}.", host.cfg.consul.domain.0);
    let path = host.cfg.dns.resolv_conf.as_path();
    let content = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let servers: Vec<IpAddr> = crate::resolvconf::servers(&content)
        .iter()
        .filter_map(|s| s.parse().ok())
        .take(3)
        .collect();
    if servers.is_empty() {
        return Ok(Finding::Problem(format!(
            "{} names no nameserver: host processes resolve nothing",
            path.display()
        )));
    }
    let mut tried = Vec::new();
    for server in &servers {
        match query_a(SocketAddr::new(*server, 53), &name, timeout(host)) {
            Ok(ips) if !ips.is_empty() => {
                let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                return Ok(Finding::Ok(format!(
                    "{name} -> {} (host resolver {server}, from {})",
                    ips.join(" "),
                    path.display()
                )));
            }
            // An answer without the name ends the search, as in glibc.
            Ok(_) => {
                tried.push(format!("{server}: no A record"));
                break;
            }
            Err(e) if e.to_string().contains("Non-Existent Domain") => {
                tried.push(format!("{server}: {e:#}"));
                break;
            }
            Err(e) => tried.push(format!("{server}: {e:#}")),
        }
    }
    Ok(Finding::Problem(format!(
        "host processes do not resolve {name}: {}",
        tried.join("; ")
    )))
}

/// A name outside the consul domain through the link address: containers
/// resolve every other name through the same chain.
fn upstream_dns(host: &Host) -> Result<Finding> {
    let Some(name) = &host.cfg.probes.upstream_name else {
        return Ok(Finding::Skipped(
            "no probes.upstream_name configured (a name outside the consul domain to look up)"
                .into(),
        ));
    };
    let name = format!("{}.", name.0.trim_end_matches('.'));
    let server = SocketAddr::new(host.cfg.link.address.ip(), 53);
    Ok(match query_a(server, &name, timeout(host)) {
        Ok(ips) if !ips.is_empty() => {
            let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
            Finding::Ok(format!("{name} -> {} through {server}", ips.join(" ")))
        }
        Ok(_) => Finding::Problem(format!("{name}: no A record through {server}")),
        Err(e) => Finding::Problem(format!(
            "{name} does not resolve through {server} (no upstream?): {e:#}"
        )),
    })
}

/// One A query over UDP with a deadline; hickory encodes and decodes.
pub fn query_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<Ipv4Addr>> {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).context("bad query name")?,
        RecordType::A,
    ));
    let bytes = msg.to_vec().context("encoding the DNS query")?;
    let any: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(any).context("opening a UDP socket")?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(server)
        .with_context(|| format!("connecting to {server}"))?;
    sock.send(&bytes)
        .with_context(|| format!("sending to {server}"))?;
    let mut buf = [0u8; 4096];
    let n = match sock.recv(&mut buf) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!("no answer within {} ms", timeout.as_millis())
        }
        Err(e) => return Err(anyhow!("{e}")),
    };
    let resp = Message::from_vec(&buf[..n]).map_err(|e| anyhow!("bad DNS answer: {e}"))?;
    if resp.metadata.id != msg.metadata.id {
        bail!("answer for another query");
    }
    if resp.metadata.response_code != ResponseCode::NoError {
        bail!("{}", resp.metadata.response_code);
    }
    Ok(resp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

fn rand_id() -> u16 {
    // Not security relevant (we talk to our own resolver); just distinct.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}

fn registrator(host: &Host) -> Result<Finding> {
    let name = &host.cfg.registrator.container.0;
    let docker = host.facts.docker()?;
    let Some(c) =
        docker.inspect_settled(name, timeout(host).min(Duration::from_millis(600)) / 2)?
    else {
        return Ok(Finding::Problem(format!("container {name} does not exist")));
    };
    let looping = c.restarting;
    Ok(if looping {
        Finding::Problem(format!(
            "{name} is crash-looping: restarting after {} restarts (last exit code {})",
            c.restart_count, c.exit_code
        ))
    } else if !c.running {
        Finding::Problem(format!("{name} is not running (exit code {})", c.exit_code))
    } else {
        Finding::Ok(format!(
            "{name} running since {}, {} restarts",
            c.started_at, c.restart_count
        ))
    })
}

fn consul_exposure(host: &Host) -> Result<Finding> {
    let bind = host.facts.bind_addr()?.ip;
    let addr = SocketAddr::new(bind, host.cfg.consul.http_port.0);
    Ok(match TcpStream::connect_timeout(&addr, timeout(host)) {
        Ok(_) => Finding::Problem(format!(
            "the Consul HTTP API is exposed on {addr}, the host's routable address: keep client_addr on loopback and the link address"
        )),
        Err(e) => Finding::Ok(format!("HTTP API not reachable on {addr} ({e})")),
    })
}
