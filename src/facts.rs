//! `nodeprep facts`: what nodeprep detects about this host, read-only.

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, Source};
use crate::engine::Host;
use crate::sys::nm;
use crate::sys::systemd::Systemd;

#[derive(Debug, Serialize)]
pub struct Facts {
    pub command: &'static str,
    pub version: &'static str,
    pub config: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub default_route_interface: Option<String>,
    pub default_route_address: Option<String>,
    /// The bind_addr nodeprep would write, or why it cannot choose one.
    pub bind_addr: String,
    pub systemd: bool,
    pub systemd_networkd_active: Option<bool>,
    pub dnsmasq_active: Option<bool>,
    pub systemd_resolved_active: Option<bool>,
    /// Who answers DNS on the link address (`dns.backend`).
    pub dns_backend: String,
    /// What `/etc/resolv.conf` is: a link (and to where) or a file, and the
    /// servers it names.
    pub resolv_conf: String,
    /// Whether the running kernel has the dummy link type, built in or as a module.
    pub kernel_dummy_support: bool,
    /// The network backend nodeprep uses here, and why.
    pub network_backend: String,
    pub networkmanager_active: Option<bool>,
    /// NetworkManager's version, when it runs.
    pub networkmanager_version: Option<String>,
    /// The Engine API socket nodeprep uses (the configured one, or the one
    /// `auto` found), or the configured candidates when none answers.
    pub docker_socket: String,
    /// Docker or Podman, its version, socket and how it was chosen, or why
    /// no engine answers.
    pub docker_engine: String,
}

/// What the host's facts say, for `nodeprep facts`: the same facts (and
/// the same bind address) resources and probes use.
pub fn gather(host: &Host, source: &Source) -> Facts {
    let cfg: &Config = &host.cfg;
    let route = host.facts.netlink().and_then(|nl| nl.default_route());
    let (ifname, addr) = match &route {
        Ok(Some(r)) => (Some(r.ifname.clone()), r.address.map(|a| a.to_string())),
        _ => (None, None),
    };
    let bind_addr = match host.facts.bind_addr() {
        Ok(b) => format!("{} ({})", b.ip, b.how),
        Err(e) => format!("unresolved: {e:#}"),
    };
    let systemd = Systemd::detect();
    let active = |unit: &str| systemd.and_then(|s| s.is_active(unit).ok());
    Facts {
        command: "facts",
        version: env!("CARGO_PKG_VERSION"),
        config: source.to_string(),
        hostname: sysinfo::System::host_name(),
        os: sysinfo::System::long_os_version(),
        kernel: sysinfo::System::kernel_version(),
        default_route_interface: ifname,
        default_route_address: addr,
        bind_addr,
        systemd: systemd.is_some(),
        systemd_networkd_active: active("systemd-networkd.service"),
        dnsmasq_active: active("dnsmasq.service"),
        systemd_resolved_active: active("systemd-resolved.service"),
        dns_backend: match cfg.dns.backend {
            crate::config::DnsBackend::Dnsmasq => "dnsmasq".into(),
            crate::config::DnsBackend::Resolved => "resolved".into(),
        },
        resolv_conf: describe_resolv_conf(cfg.dns.resolv_conf.as_path()),
        kernel_dummy_support: kernel_has_dummy(),
        network_backend: match host.facts.network_backend() {
            Ok(b) => format!("{} ({})", b.backend.name(), b.how),
            Err(e) => format!("unknown: {e:#}"),
        },
        networkmanager_active: active("NetworkManager.service"),
        networkmanager_version: match host.facts.nm() {
            Ok(nm::Daemon::Running(v)) => Some(v.to_string()),
            _ => None,
        },
        docker_socket: match host.facts.docker() {
            Ok(d) => d.socket().display().to_string(),
            Err(_) => String::from(cfg.docker.socket.clone()),
        },
        docker_engine: match host.facts.docker() {
            Ok(d) => d.describe(),
            Err(e) => format!("unreachable: {e:#}"),
        },
    }
}

/// Loaded (/sys/module/dummy), built in, or available as a module for the
/// running kernel.
fn kernel_has_dummy() -> bool {
    if Path::new("/sys/module/dummy").exists() {
        return true;
    }
    let Some(release) = sysinfo::System::kernel_version() else {
        return false;
    };
    let dir = Path::new("/lib/modules").join(release);
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f))
            .map(|t| t.lines().any(|l| l.contains("/dummy.ko")))
            .unwrap_or(false)
    })
}

/// `link to ../run/systemd/resolve/stub-resolv.conf (127.0.0.53)`, or
/// `file (127.0.0.1 192.0.2.53)`.
fn describe_resolv_conf(path: &Path) -> String {
    let servers = std::fs::read(path)
        .map(|c| crate::resolvconf::servers(&c).join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    match std::fs::read_link(path) {
        Ok(target) => format!("link to {} ({servers})", target.display()),
        Err(_) if path.exists() => format!("file ({servers})"),
        Err(_) => "missing".into(),
    }
}
