//! The validated configuration with every default resolved, and the rules
//! that span several keys. Pure: no file is read here (`encrypt_file` is read
//! by [`super::load`] after the text has been parsed).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use super::schema::*;
use super::types::*;

/// The validated configuration with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub link: Link,
    pub network: Network,
    pub networkd: Networkd,
    pub networkmanager: NetworkManager,
    pub dnsmasq: Dnsmasq,
    pub consul: Consul,
    pub environment: Environment,
    pub docker: Docker,
    pub registrator: Registrator,
    pub probes: Probes,
    pub report: ReportCfg,
    pub state: State,
    pub dns: Dns,
}

/// nodeprep's own record (what `remove` needs to undo `apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    pub dir: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    /// Per probe; a hung service never hangs an audit.
    pub timeout_ms: u64,
    /// A name outside the consul domain for the `upstream-dns` probe
    /// (skipped when unset).
    pub upstream_name: Option<DnsName>,
}

/// `check --report-consul`: the TTL check on the local agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportCfg {
    /// Longer than the audit timer's period, so a host that stops auditing
    /// turns critical in Consul.
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub name: IfName,
    pub address: LinkAddress,
}

/// Which service recreates the link at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub backend: NetworkBackend,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Networkd {
    pub dir: AbsPath,
}

/// Where NetworkManager keeps its connection profiles and its
/// configuration snippets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkManager {
    /// The keyfile `<link>.nmconnection` of the `networkmanager` backend.
    pub connections_dir: AbsPath,
    /// The snippet that keeps NetworkManager off the link under the
    /// `networkd` backend.
    pub conf_dir: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dnsmasq {
    pub file: AbsPath,
    pub listen: Vec<IpAddr>,
    pub resolv_file: ResolvFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consul {
    pub config_dir: AbsPath,
    pub data_dir: AbsPath,
    pub client_addr: ClientAddr,
    pub bind_addr: BindAddr,
    pub http_port: Port,
    pub dns_port: Port,
    pub domain: DnsDomain,
    pub image: ImageRef,
    pub container: ContainerName,
    pub replace_unmanaged: bool,
    pub uid: u32,
    pub gid: u32,
    pub cluster: Cluster,
}

/// The agent's cluster settings, written to `agent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub role: Role,
    pub datacenter: Datacenter,
    /// `None`: Consul uses the host name (the container shares the host's
    /// network and so its host name).
    pub node_name: Option<NodeName>,
    pub retry_join: Vec<JoinAddr>,
    /// Servers only.
    pub bootstrap_expect: Option<u32>,
    /// The gossip key, from `encrypt`, or from `encrypt_file` once
    /// [`super::Config::read_secrets`] has read it. A secret: never printed.
    #[serde(skip)]
    pub encrypt: Option<GossipKey>,
    /// Where the gossip key is read from, with the line of the key in the
    /// configuration file (`line L, column C`) for error messages.
    pub encrypt_file: Option<(PathBuf, String)>,
    /// Servers only.
    pub ui: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Docker {
    /// The Engine API socket, or `auto`.
    pub socket: DockerSocket,
    /// Docker or Podman, or `auto` (told apart by the engine's answer).
    pub engine: EngineChoice,
    /// How long `apply` waits for dockerd's socket to answer (cloud-init can
    /// run nodeprep while dockerd is still starting). `check` never waits.
    pub wait_secs: WaitSecs,
    /// Make the link address every container's default DNS server.
    pub daemon_dns: bool,
    /// dockerd's configuration file, merged (foreign keys kept).
    pub daemon_json: AbsPath,
    /// Podman's drop-in (`containers.conf.d`), nodeprep's own file.
    pub podman_conf: AbsPath,
    /// When dockerd may be restarted to read a changed `daemon.json`.
    pub restart: DockerRestart,
}

/// Who answers DNS on the link address, and how the host's own resolver
/// reaches the consul domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dns {
    pub backend: DnsBackend,
    /// systemd-resolved drop-in written by the `resolved` backend.
    pub resolved_dropin: AbsPath,
    /// The host's resolver configuration (on hosts without systemd-resolved).
    pub resolv_conf: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registrator {
    pub image: ImageRef,
    pub container: ContainerName,
    pub replace_unmanaged: bool,
    pub args: Vec<RegistratorArg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    pub file: AbsPath,
    /// The managed variables: `CONSUL_HTTP_ADDR` plus whatever the file adds.
    pub vars: BTreeMap<EnvName, EnvValue>,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(File::default(), "").expect("the embedded default is valid")
    }
}

/// The pinned default images. hashicorp/consul is the official image
/// (library/consul is gone). gliderlabs/registrator's last release is v7
/// (2016): it is the image the recipes use and it still works against the
/// Docker Engine API; the maintained fork fayrus/registrator can be set
/// through `registrator.image`.
pub const DEFAULT_CONSUL_IMAGE: &str = "hashicorp/consul:1.20.1";
pub const DEFAULT_REGISTRATOR_IMAGE: &str = "gliderlabs/registrator:v7";

impl Config {
    /// Fills in every default. Defaults that name the link address follow a
    /// configured `link.address`, so changing one key keeps the layout coherent.
    pub fn resolve(file: File, text: &str) -> Result<Config, String> {
        let cluster = resolve_cluster(&file.consul, text)?;
        let link = Link {
            name: file.link.name.unwrap_or_else(|| IfName("dummy0".into())),
            address: file
                .link
                .address
                .unwrap_or(LinkAddress(IpNet::V4(Ipv4Net::new_assert(
                    Ipv4Addr::new(169, 254, 1, 1),
                    32,
                )))),
        };
        let link_ip = link.address.ip();
        let http_port = file.consul.http_port.unwrap_or(Port(8500));
        let consul = Consul {
            config_dir: file
                .consul
                .config_dir
                .unwrap_or_else(|| abs("/etc/consul.d")),
            data_dir: file
                .consul
                .data_dir
                .unwrap_or_else(|| abs("/var/lib/consul")),
            client_addr: file
                .consul
                .client_addr
                .unwrap_or_else(|| ClientAddr(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), link_ip])),
            bind_addr: file.consul.bind_addr.unwrap_or(BindAddr::Auto),
            http_port,
            dns_port: file.consul.dns_port.unwrap_or(Port(8600)),
            domain: file
                .consul
                .domain
                .unwrap_or_else(|| DnsDomain("consul".into())),
            image: file
                .consul
                .image
                .unwrap_or_else(|| ImageRef(DEFAULT_CONSUL_IMAGE.into())),
            container: file
                .consul
                .container
                .unwrap_or_else(|| ContainerName("consul".into())),
            replace_unmanaged: file.consul.replace_unmanaged.unwrap_or(false),
            uid: file.consul.uid.unwrap_or(100),
            gid: file.consul.gid.unwrap_or(1000),
            cluster,
        };
        let mut vars = BTreeMap::new();
        vars.insert(
            EnvName("CONSUL_HTTP_ADDR".into()),
            EnvValue(SocketAddr::new(link_ip, http_port.0).to_string()),
        );
        // Variables from the file are added to the managed set and may
        // override the default value of CONSUL_HTTP_ADDR.
        vars.extend(file.environment.vars.unwrap_or_default());
        let cfg = Config {
            probes: Probes {
                timeout_ms: file.probes.timeout_ms.map_or(2000, |b| b.0),
                upstream_name: file.probes.upstream_name,
            },
            dns: Dns {
                backend: file.dns.backend.unwrap_or(DnsBackend::Dnsmasq),
                resolved_dropin: file
                    .dns
                    .resolved_dropin
                    .unwrap_or_else(|| abs("/etc/systemd/resolved.conf.d/nodeprep.conf")),
                resolv_conf: file
                    .dns
                    .resolv_conf
                    .unwrap_or_else(|| abs("/etc/resolv.conf")),
            },
            state: State {
                dir: file
                    .state
                    .dir
                    .unwrap_or_else(|| abs(crate::state::STATE_DIR)),
            },
            report: ReportCfg {
                ttl_secs: file.report.ttl_secs.map_or(7200, |b| b.0),
            },
            docker: Docker {
                socket: file.docker.socket.unwrap_or(DockerSocket::Auto),
                engine: file.docker.engine.unwrap_or(EngineChoice::Auto),
                wait_secs: file.docker.wait_secs.unwrap_or(WaitSecs(60)),
                daemon_dns: file.docker.daemon_dns.unwrap_or(true),
                daemon_json: file
                    .docker
                    .daemon_json
                    .unwrap_or_else(|| abs("/etc/docker/daemon.json")),
                podman_conf: file
                    .docker
                    .podman_conf
                    .unwrap_or_else(|| abs("/etc/containers/containers.conf.d/nodeprep.conf")),
                restart: file.docker.restart.unwrap_or(DockerRestart::WhenIdle),
            },
            registrator: Registrator {
                image: file
                    .registrator
                    .image
                    .unwrap_or_else(|| ImageRef(DEFAULT_REGISTRATOR_IMAGE.into())),
                container: file
                    .registrator
                    .container
                    .unwrap_or_else(|| ContainerName("registrator".into())),
                replace_unmanaged: file.registrator.replace_unmanaged.unwrap_or(false),
                args: file.registrator.args.unwrap_or_default(),
            },
            network: Network {
                backend: file.network.backend.unwrap_or(NetworkBackend::Auto),
            },
            networkmanager: NetworkManager {
                connections_dir: file
                    .networkmanager
                    .connections_dir
                    .unwrap_or_else(|| abs("/etc/NetworkManager/system-connections")),
                conf_dir: file
                    .networkmanager
                    .conf_dir
                    .unwrap_or_else(|| abs("/etc/NetworkManager/conf.d")),
            },
            networkd: Networkd {
                dir: file
                    .networkd
                    .dir
                    .unwrap_or_else(|| abs("/etc/systemd/network")),
            },
            dnsmasq: Dnsmasq {
                file: file
                    .dnsmasq
                    .file
                    .unwrap_or_else(|| abs("/etc/dnsmasq.d/consul.conf")),
                // IPv4 only in the file for now; the type is ready for both.
                listen: file.dnsmasq.listen.map_or_else(
                    || vec![IpAddr::V4(Ipv4Addr::LOCALHOST), link_ip],
                    |l| l.into_iter().map(IpAddr::V4).collect(),
                ),
                resolv_file: file.dnsmasq.resolv_file.unwrap_or(ResolvFile::Auto),
            },
            environment: Environment {
                file: file
                    .environment
                    .file
                    .unwrap_or_else(|| abs("/etc/environment")),
                vars,
            },
            link,
            consul,
        };
        cfg.check(text)?;
        Ok(cfg)
    }

    /// Rules a single value cannot break alone but the whole configuration
    /// can: values harmless in isolation that break the layout together.
    /// Each error names the line and column of a key the file sets.
    fn check(&self, text: &str) -> Result<(), String> {
        let at = |key: &str| locate(text, key);
        // dnsmasq: an empty listen list makes dnsmasq answer on every
        // interface; so does the wildcard address.
        let listen = &self.dnsmasq.listen;
        if listen.is_empty() {
            return Err(format!(
                "{}: dnsmasq.listen is empty: dnsmasq would then answer on every interface; list the addresses it serves (e.g. [\"127.0.0.1\", \"{}\"])",
                at("dnsmasq.listen"),
                self.link.address.ip()
            ));
        }
        for (i, ip) in listen.iter().enumerate() {
            let bad = match ip {
                IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
                IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
            };
            if bad {
                return Err(format!(
                    "{}: dnsmasq.listen holds {ip}, which is not one address: dnsmasq would answer on every interface (or none)",
                    at("dnsmasq.listen")
                ));
            }
            if listen[..i].contains(ip) {
                return Err(format!(
                    "{}: dnsmasq.listen lists {ip} twice",
                    at("dnsmasq.listen")
                ));
            }
        }
        // Consul's HTTP API must not answer on every interface.
        if let Some(ip) = self
            .consul
            .client_addr
            .0
            .iter()
            .find(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "{}: consul.client_addr holds {ip}: the agent's HTTP API and DNS would answer on every interface; list the link address and 127.0.0.1",
                at("consul.client_addr")
            ));
        }
        // Ports: dnsmasq owns 53 on the link address and forwards the
        // domain to dns_port; Consul's own ports are taken.
        let (http, dns) = (self.consul.http_port.0, self.consul.dns_port.0);
        let port_key = |key: &str| at(&format!("consul.{key}"));
        for (key, port) in [("dns_port", dns), ("http_port", http)] {
            if port == 53 {
                return Err(format!(
                    "{}: consul.{key} = 53 is dnsmasq's port on the link address: dnsmasq would forward the consul domain to itself",
                    port_key(key)
                ));
            }
            if port < 1024 {
                return Err(format!(
                    "{}: consul.{key} = {port}: the agent runs as the image's consul user on the host's network and cannot bind a port below 1024",
                    port_key(key)
                ));
            }
            if (8300..=8302).contains(&port) {
                return Err(format!(
                    "{}: consul.{key} = {port} is one of Consul's own ports (8300 server RPC, 8301 LAN and 8302 WAN gossip)",
                    port_key(key)
                ));
            }
        }
        if http == dns {
            let key = if text_sets(text, "consul.http_port") {
                "http_port"
            } else {
                "dns_port"
            };
            return Err(format!(
                "{}: consul.http_port and consul.dns_port are both {http}: the agent cannot serve HTTP and DNS on one port",
                port_key(key)
            ));
        }
        // Paths: a file key must name a file, a directory key a directory
        // other than `/`, and no two managed paths may be the same.
        let dirs: [(&str, &Path); 4] = [
            ("networkd.dir", self.networkd.dir.as_path()),
            ("consul.config_dir", self.consul.config_dir.as_path()),
            ("consul.data_dir", self.consul.data_dir.as_path()),
            ("state.dir", self.state.dir.as_path()),
        ];
        let files: [(&str, &Path); 2] = [
            ("dnsmasq.file", self.dnsmasq.file.as_path()),
            ("environment.file", self.environment.file.as_path()),
        ];
        for (key, dir) in dirs {
            if dir.parent().is_none() {
                return Err(format!("{}: {key} may not be /", at(key)));
            }
        }
        let mut file_paths: Vec<(&str, PathBuf)> =
            files.iter().map(|(k, p)| (*k, p.to_path_buf())).collect();
        if let Some((path, _)) = &self.consul.cluster.encrypt_file {
            file_paths.push(("consul.encrypt_file", path.clone()));
        }
        for (key, file) in &file_paths {
            let raw = file.as_os_str().as_encoded_bytes();
            if raw.ends_with(b"/") || raw.ends_with(b"/.") || file.file_name().is_none() {
                return Err(format!(
                    "{}: {key} = {:?} names a directory; it must name a file",
                    at(key),
                    file.display()
                ));
            }
        }
        for (key, file) in &files {
            for (dkey, dir) in dirs {
                if file == &dir || (dkey == "state.dir" && file.starts_with(dir)) {
                    return Err(format!(
                        "{}: {key} = {:?} is {} {dkey}",
                        at(key),
                        file.display(),
                        if file == &dir {
                            "the directory of"
                        } else {
                            "inside"
                        }
                    ));
                }
            }
        }
        let managed: Vec<(&str, PathBuf)> = files
            .iter()
            .map(|(k, p)| (*k, p.to_path_buf()))
            .chain(
                [
                    crate::resources::consul_config::INTERFACES_FILE,
                    crate::resources::consul_config::AGENT_FILE,
                ]
                .iter()
                .map(|f| {
                    (
                        "consul.config_dir",
                        self.consul.config_dir.as_path().join(f),
                    )
                }),
            )
            .collect();
        for (i, (key, path)) in managed.iter().enumerate() {
            if let Some((other, _)) = managed[..i].iter().find(|(_, p)| p == path) {
                return Err(format!(
                    "{}: {key} and {other} both name {}: two resources would fight over one file",
                    at(key),
                    path.display()
                ));
            }
        }
        for (i, (key, dir)) in dirs.iter().enumerate() {
            for (other, odir) in &dirs[..i] {
                let nested = dir == odir
                    || (*key == "state.dir" && dir.starts_with(odir))
                    || (*other == "state.dir" && odir.starts_with(dir));
                if nested {
                    return Err(format!(
                        "{}: {key} = {:?} overlaps {other} = {:?}",
                        at(key),
                        dir.display(),
                        odir.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The agent's HTTP API as containers and the host reach it: the link
    /// address and `http_port` (`[v6]:port` when printed, for IPv6).
    pub fn agent_http(&self) -> SocketAddr {
        SocketAddr::new(self.link.address.ip(), self.consul.http_port.0)
    }

    /// The agent's DNS interface on the link address, where dnsmasq forwards.
    pub fn agent_dns(&self) -> SocketAddr {
        SocketAddr::new(self.link.address.ip(), self.consul.dns_port.0)
    }
}

impl Link {
    /// Every address the link carries, at most one per family (IPv4 only
    /// today).
    pub fn addresses(&self) -> Vec<IpNet> {
        vec![self.address.0]
    }
}

/// Cross-field rules of the cluster settings, reported with the line of the
/// offending key (`text` is the file, for line numbers).
fn resolve_cluster(c: &ConsulFile, text: &str) -> Result<Cluster, String> {
    let at = |span: std::ops::Range<usize>, key: &str| {
        format!("{}, key `consul.{key}`", position(text, span.start))
    };
    let role = c.role.unwrap_or(Role::Client);
    let bootstrap_expect = match (&c.bootstrap_expect, role) {
        (Some(b), Role::Client) => {
            return Err(format!(
                "{}: bootstrap_expect applies to servers only; remove it or set consul.role = \"server\"",
                at(b.span(), "bootstrap_expect")
            ))
        }
        (Some(b), Role::Server) if *b.get_ref() == 0 => {
            return Err(format!("{}: bootstrap_expect must be at least 1", at(b.span(), "bootstrap_expect")))
        }
        (Some(b), Role::Server) => Some(*b.get_ref()),
        (None, Role::Server) => {
            return Err(format!(
                "{}: consul.role = \"server\" needs key `consul.bootstrap_expect` (1 for a single server, \
                 3 or 5 for a cluster): without it no leader is ever elected",
                locate(text, "consul.role")
            ))
        }
        (None, Role::Client) => None,
    };
    let ui = match (&c.ui, role) {
        (Some(u), Role::Client) if *u.get_ref() => {
            return Err(format!(
                "{}: the UI is served by servers only here; set consul.role = \"server\"",
                at(u.span(), "ui")
            ))
        }
        (Some(u), _) => *u.get_ref(),
        (None, _) => false,
    };
    let (encrypt, encrypt_file) = match (&c.encrypt, &c.encrypt_file) {
        (Some(_), Some(f)) => {
            return Err(format!(
                "{}: set either encrypt or encrypt_file, not both",
                at(f.span(), "encrypt_file")
            ))
        }
        (Some(k), None) => (Some(k.get_ref().clone()), None),
        (None, Some(f)) => (
            None,
            Some((
                f.get_ref().as_path().to_path_buf(),
                position(text, f.span().start),
            )),
        ),
        (None, None) => (None, None),
    };
    Ok(Cluster {
        role,
        datacenter: c
            .datacenter
            .clone()
            .unwrap_or_else(|| Datacenter("dc1".into())),
        node_name: c.node_name.clone(),
        retry_join: c.retry_join.clone().unwrap_or_default(),
        bootstrap_expect,
        encrypt,
        encrypt_file,
        ui,
    })
}

/// `line L, column C` (both 1-based; the column counts characters) of byte
/// `offset` in `text`.
pub fn position(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Where the value of dotted key `key` ("consul.dns_port") is written in
/// `text`: `line L, column C, key `consul.dns_port``. A key the file does
/// not set (a default broke a rule together with one that is set) is named
/// without a position.
pub fn locate(text: &str, key: &str) -> String {
    match span_of(text, key) {
        Some(span) => format!("{}, key `{key}`", position(text, span.start)),
        None => format!("key `{key}` (not set in the file: its default)"),
    }
}

fn text_sets(text: &str, key: &str) -> bool {
    span_of(text, key).is_some()
}

fn span_of(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
        if i + 1 == parts.len() {
            return Some(value.span());
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    None
}
