//! The configuration file: every key optional, everything validated while it is
//! parsed, so that a bad value is reported with the file, line and key before
//! anything on the host is touched.
//!
//! Validation happens inside deserialization on purpose: the toml parser then
//! attaches the line, column and key path of the offending value to the error,
//! which a separate validation pass over plain structs could not do.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Where `apply` and `check` look for their configuration by default.
pub const DEFAULT_PATH: &str = "/etc/nodeprep/nodeprep.toml";

/// The commented default configuration printed by `nodeprep config default`.
/// A test proves that it parses back to [`Config::default`].
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The configuration as written in the file. Optional keys whose default
/// derives from another key (`dnsmasq.listen` from `link.address`, for example)
/// stay `None` here and are resolved by [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub link: LinkFile,
    #[serde(default)]
    pub networkd: NetworkdFile,
    #[serde(default)]
    pub dnsmasq: DnsmasqFile,
    #[serde(default)]
    pub consul: ConsulFile,
    #[serde(default)]
    pub environment: EnvironmentFile,
    #[serde(default)]
    pub docker: DockerFile,
    #[serde(default)]
    pub registrator: RegistratorFile,
    #[serde(default)]
    pub probes: ProbesFile,
    #[serde(default)]
    pub report: ReportFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesFile {
    pub timeout_ms: Option<Bounded<50, 60_000>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFile {
    pub ttl_secs: Option<Bounded<10, 604_800>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFile {
    pub name: Option<IfName>,
    pub address: Option<LinkAddress>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkdFile {
    pub dir: Option<AbsPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsmasqFile {
    pub file: Option<AbsPath>,
    pub listen: Option<Vec<Ipv4Addr>>,
    pub resolv_file: Option<ResolvFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulFile {
    pub config_dir: Option<AbsPath>,
    pub data_dir: Option<AbsPath>,
    pub client_addr: Option<ClientAddr>,
    pub bind_addr: Option<BindAddr>,
    pub http_port: Option<Port>,
    pub dns_port: Option<Port>,
    pub domain: Option<DnsDomain>,
    pub image: Option<ImageRef>,
    pub container: Option<ContainerName>,
    pub replace_unmanaged: Option<bool>,
    /// The image's `consul` user, which runs the agent and owns the data dir.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub role: Option<Role>,
    pub datacenter: Option<Datacenter>,
    pub node_name: Option<NodeName>,
    pub retry_join: Option<Vec<JoinAddr>>,
    pub bootstrap_expect: Option<toml::Spanned<u32>>,
    pub encrypt: Option<toml::Spanned<GossipKey>>,
    pub encrypt_file: Option<toml::Spanned<AbsPath>>,
    pub ui: Option<toml::Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFile {
    pub socket: Option<AbsPath>,
    pub wait_secs: Option<WaitSecs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistratorFile {
    pub image: Option<ImageRef>,
    pub container: Option<ContainerName>,
    pub replace_unmanaged: Option<bool>,
    pub args: Option<Vec<RegistratorArg>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    pub file: Option<AbsPath>,
    pub vars: Option<BTreeMap<EnvName, EnvValue>>,
}

/// The validated configuration with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub link: Link,
    pub networkd: Networkd,
    pub dnsmasq: Dnsmasq,
    pub consul: Consul,
    pub environment: Environment,
    pub docker: Docker,
    pub registrator: Registrator,
    pub probes: Probes,
    pub report: ReportCfg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    /// Per probe; a hung service never hangs an audit.
    pub timeout_ms: u64,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Networkd {
    pub dir: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dnsmasq {
    pub file: AbsPath,
    pub listen: Vec<Ipv4Addr>,
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
    /// The gossip key, from `encrypt` or `encrypt_file`. A secret: never printed.
    #[serde(skip)]
    pub encrypt: Option<GossipKey>,
    /// Servers only.
    pub ui: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Docker {
    pub socket: AbsPath,
    /// How long `apply` waits for dockerd's socket to answer (cloud-init can
    /// run nodeprep while dockerd is still starting). `check` never waits.
    pub wait_secs: WaitSecs,
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
            address: file.link.address.unwrap_or(LinkAddress(Ipv4Net::new_assert(
                Ipv4Addr::new(169, 254, 1, 1),
                32,
            ))),
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
            client_addr: file.consul.client_addr.unwrap_or_else(|| {
                ClientAddr(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(link_ip)])
            }),
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
            EnvValue(format!("{link_ip}:{}", http_port.0)),
        );
        // Variables from the file are added to the managed set and may
        // override the default value of CONSUL_HTTP_ADDR.
        vars.extend(file.environment.vars.unwrap_or_default());
        Ok(Config {
            probes: Probes {
                timeout_ms: file.probes.timeout_ms.map_or(2000, |b| b.0),
            },
            report: ReportCfg {
                ttl_secs: file.report.ttl_secs.map_or(7200, |b| b.0),
            },
            docker: Docker {
                socket: file
                    .docker
                    .socket
                    .unwrap_or_else(|| abs("/var/run/docker.sock")),
                wait_secs: file.docker.wait_secs.unwrap_or(WaitSecs(60)),
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
                listen: file
                    .dnsmasq
                    .listen
                    .unwrap_or_else(|| vec![Ipv4Addr::LOCALHOST, link_ip]),
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
        })
    }

    /// Parses configuration text. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let invalid = || format!("invalid configuration in {}", origin.display());
        let de = toml::Deserializer::parse(text).with_context(invalid)?;
        // serde_path_to_error records the key path ("consul.bind_addr") while
        // the toml error itself carries the line, column and offending text.
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> fields show up as an inner private key: drop it.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            if key == "consul.encrypt" {
                // The toml error quotes the offending line: never for a secret.
                let line = inner
                    .span()
                    .and_then(|s| text.get(..s.start))
                    .map_or(0, |t| t.matches('\n').count())
                    + 1;
                return anyhow::anyhow!(
                    "{}: line {line}, key `{key}`: {}",
                    invalid(),
                    inner.message()
                );
            }
            anyhow::Error::new(inner).context(format!("{}: key `{key}`", invalid()))
        })?;
        Config::resolve(file, text).map_err(|e| anyhow::anyhow!("{}: {e}", invalid()))
    }

    /// Loads the configuration. With no explicit path, a missing default file
    /// means the embedded defaults; an explicit path must exist.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Source)> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((
                Config::parse(&text, path)?,
                Source::File(path.to_path_buf()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Ok((Config::default(), Source::Embedded))
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot read configuration {}", path.display()))
            }
        }
    }
}

/// Cross-field rules of the cluster settings, reported with the line of the
/// offending key (`text` is the file, for line numbers).
fn resolve_cluster(c: &ConsulFile, text: &str) -> Result<Cluster, String> {
    let at = |span: std::ops::Range<usize>, key: &str| {
        let line = text
            .get(..span.start)
            .map_or(0, |t| t.matches('\n').count())
            + 1;
        format!("line {line}, key `consul.{key}`")
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
            return Err("key `consul.bootstrap_expect`: a server needs it (1 for a single server, \
                        3 or 5 for a cluster): without it no leader is ever elected"
                .to_string())
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
    let encrypt = match (&c.encrypt, &c.encrypt_file) {
        (Some(_), Some(f)) => {
            return Err(format!(
                "{}: set either encrypt or encrypt_file, not both",
                at(f.span(), "encrypt_file")
            ))
        }
        (Some(k), None) => Some(k.get_ref().clone()),
        (None, Some(f)) => {
            let path = f.get_ref().as_path();
            let key = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "{}: cannot read {}: {e}",
                    at(f.span(), "encrypt_file"),
                    path.display()
                )
            })?;
            // The key itself is never echoed, only where it came from.
            Some(GossipKey::try_from(key.trim().to_string()).map_err(|e| {
                format!("{}: {}: {e}", at(f.span(), "encrypt_file"), path.display())
            })?)
        }
        (None, None) => None,
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
        ui,
    })
}

/// Where the configuration came from, for `facts` and verbose output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => write!(f, "embedded default (no {DEFAULT_PATH})"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn abs(p: &str) -> AbsPath {
    AbsPath(PathBuf::from(p))
}

/// Declares a validated newtype: deserialized from a string through `TryFrom`,
/// serialized back as the same string.
macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident($inner:ty), |$s:ident| $parse:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub $inner);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from($s: String) -> Result<Self, String> {
                $parse.map($name)
            }
        }
    };
}

string_newtype!(
    /// A Linux interface name: 1 to 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
    IfName(String),
    |s| {
        if s.is_empty() || s.len() > 15 {
            Err(format!("interface name {s:?} must be 1 to 15 bytes long (the kernel's IFNAMSIZ), not {}", s.len()))
        } else if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
            Err(format!("interface name {s:?} may not be . or .. nor contain '/', ':' or whitespace"))
        } else {
            Ok(s)
        }
    }
);
impl From<IfName> for String {
    fn from(v: IfName) -> String {
        v.0
    }
}
impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_newtype!(
    /// The link's address in CIDR form. Only a /32: a wider prefix on a
    /// 169.254.0.0/16 address would route the whole link-local range, including
    /// the cloud metadata address 169.254.169.254, into the dummy link.
    LinkAddress(Ipv4Net),
    |s| {
        let net: Ipv4Net = s
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 address in CIDR form such as \"169.254.1.1/32\""))?;
        if net.prefix_len() != 32 {
            Err(format!(
                "{s:?} must be a /32: a wider prefix would capture other addresses (such as the cloud metadata address 169.254.169.254)"
            ))
        } else if net.addr().is_unspecified() || net.addr().is_broadcast() || net.addr().is_multicast() || net.addr().is_loopback() {
            Err(format!("{s:?} is not a usable unicast address for the link"))
        } else {
            Ok(net)
        }
    }
);
impl LinkAddress {
    pub fn ip(&self) -> Ipv4Addr {
        self.0.addr()
    }
}
impl From<LinkAddress> for String {
    fn from(v: LinkAddress) -> String {
        v.0.to_string()
    }
}
impl fmt::Display for LinkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_newtype!(
    /// An absolute path (managed files are always named absolutely so that
    /// `--root` can re-base them).
    AbsPath(PathBuf),
    |s| {
        let p = PathBuf::from(&s);
        if !p.is_absolute() {
            Err(format!("{s:?} must be an absolute path"))
        } else if p.components().any(|c| c == std::path::Component::ParentDir) {
            Err(format!("{s:?} may not contain '..'"))
        } else {
            Ok(p)
        }
    }
);
impl From<AbsPath> for String {
    fn from(v: AbsPath) -> String {
        v.0.to_string_lossy().into_owned()
    }
}
impl AbsPath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

string_newtype!(
    /// Consul's `client_addr`: one or more IP addresses separated by spaces.
    ClientAddr(Vec<IpAddr>),
    |s| {
        let addrs = s
            .split_whitespace()
            .map(|a| a.parse::<IpAddr>().map_err(|_| format!("{a:?} in {s:?} is not an IP address")))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            Err("client_addr needs at least one IP address".to_string())
        } else {
            Ok(addrs)
        }
    }
);
impl From<ClientAddr> for String {
    fn from(v: ClientAddr) -> String {
        v.to_string()
    }
}
impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        f.write_str(&parts.join(" "))
    }
}

/// Consul's `bind_addr`: an explicit IPv4 address, or `auto` for the primary
/// IPv4 address of the interface holding the default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum BindAddr {
    Auto,
    Addr(Ipv4Addr),
}
impl TryFrom<String> for BindAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "auto" {
            return Ok(BindAddr::Auto);
        }
        let ip: Ipv4Addr = s
            .parse()
            .map_err(|_| format!("{s:?} is neither \"auto\" nor an IPv4 address"))?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            return Err(format!(
                "{s:?} cannot be bind_addr: Consul gossips on it, so it must be an address other hosts can reach"
            ));
        }
        Ok(BindAddr::Addr(ip))
    }
}
impl From<BindAddr> for String {
    fn from(v: BindAddr) -> String {
        match v {
            BindAddr::Auto => "auto".into(),
            BindAddr::Addr(ip) => ip.to_string(),
        }
    }
}

/// A TCP/UDP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct Port(pub u16);
impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(format!("port {n} is out of range 1-65535")),
        }
    }
}
impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.0
    }
}

string_newtype!(
    /// Consul's DNS domain (`consul` unless the agent sets `domain`).
    DnsDomain(String),
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if ok {
            Ok(s)
        } else {
            Err(format!("{s:?} is not a DNS domain name (letters, digits and '-' in dot-separated labels)"))
        }
    }
);
impl From<DnsDomain> for String {
    fn from(v: DnsDomain) -> String {
        v.0
    }
}

/// Which upstream list dnsmasq reads. `auto`: systemd-resolved's real upstream
/// list when resolved manages the host's DNS, else dnsmasq's own default;
/// `none`: leave dnsmasq's default; or an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResolvFile {
    Auto,
    None,
    Path(PathBuf),
}
impl TryFrom<String> for ResolvFile {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(ResolvFile::Auto),
            "none" => Ok(ResolvFile::None),
            _ if s.starts_with('/') && !s.contains(char::is_whitespace) => {
                Ok(ResolvFile::Path(PathBuf::from(s)))
            }
            _ => Err(format!(
                "{s:?} must be \"auto\", \"none\" or an absolute path without spaces"
            )),
        }
    }
}
impl From<ResolvFile> for String {
    fn from(v: ResolvFile) -> String {
        match v {
            ResolvFile::Auto => "auto".into(),
            ResolvFile::None => "none".into(),
            ResolvFile::Path(p) => p.to_string_lossy().into_owned(),
        }
    }
}

string_newtype!(
    /// An environment variable name as pam_env accepts it.
    EnvName(String),
    |s| {
        let mut bytes = s.bytes();
        let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(s)
        } else {
            Err(format!("{s:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"))
        }
    }
);
impl From<EnvName> for String {
    fn from(v: EnvName) -> String {
        v.0
    }
}
impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_newtype!(
    /// An environment variable value for /etc/environment. pam_env has no
    /// escape syntax there, so quotes, backslashes, '$' and control characters
    /// are refused rather than written in a form pam_env would misread.
    EnvValue(String),
    |s| {
        if let Some(c) = s.chars().find(|c| matches!(c, '"' | '\'' | '\\' | '$' | '`') || c.is_control()) {
            Err(format!("value {s:?} contains {c:?}, which /etc/environment cannot hold safely"))
        } else {
            Ok(s)
        }
    }
);
impl From<EnvValue> for String {
    fn from(v: EnvValue) -> String {
        v.0
    }
}
impl fmt::Display for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Server,
}

string_newtype!(
    /// A Docker image reference, pinned: a tag other than `latest`, or a
    /// digest. An unpinned image changes under a converged host.
    ImageRef(String),
    |s| {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s.as_str(), None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        let path_ok = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        // The first component may be a registry host[:port], which may hold
        // uppercase letters, dots and a port.
        let mut comps: Vec<&str> = repo.split('/').collect();
        if comps.len() > 1 && (comps[0].contains(['.', ':']) || comps[0] == "localhost") {
            comps.remove(0);
        }
        let tag_ok = tag.is_none_or(|t| {
            !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        });
        let digest_ok = digest.is_none_or(|d| d.starts_with("sha256:") && d.len() == 71);
        if !comps.iter().all(|c| path_ok(c)) || !tag_ok || !digest_ok {
            Err(format!("{s:?} is not a valid image reference (e.g. \"hashicorp/consul:1.20.1\")"))
        } else if digest.is_none() && matches!(tag, None | Some("latest")) {
            Err(format!("image {s:?} is not pinned: give a version tag (not `latest`) or a digest, so that a converged host stays converged"))
        } else {
            Ok(s)
        }
    }
);
impl From<ImageRef> for String {
    fn from(v: ImageRef) -> String {
        v.0
    }
}
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_newtype!(
    /// A container name as Docker accepts it.
    ContainerName(String),
    |s| {
        let ok = s.len() >= 2
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok { Ok(s) } else { Err(format!("{s:?} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)")) }
    }
);
impl From<ContainerName> for String {
    fn from(v: ContainerName) -> String {
        v.0
    }
}
impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_newtype!(
    /// A Consul datacenter name.
    Datacenter(String),
    |s| {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if ok { Ok(s) } else { Err(format!("{s:?} is not a valid datacenter name (letters, digits, '-' and '_')")) }
    }
);
impl From<Datacenter> for String {
    fn from(v: Datacenter) -> String {
        v.0
    }
}

string_newtype!(
    /// A Consul node name; it becomes a DNS label (`<node>.node.consul`).
    NodeName(String),
    |s| {
        let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok { Ok(s) } else { Err(format!("{s:?} is not a valid node name (letters, digits, '-', '_' and '.', at most 63)")) }
    }
);
impl From<NodeName> for String {
    fn from(v: NodeName) -> String {
        v.0
    }
}

string_newtype!(
    /// A `retry_join` entry: an address, a host name, or a cloud auto-join
    /// string (`provider=aws tag_key=... tag_value=...`), passed through as is.
    JoinAddr(String),
    |s| {
        if s.trim().is_empty() {
            Err("retry_join entries may not be empty".to_string())
        } else if s.trim() != s || s.contains(['\n', '\r', '"']) {
            Err(format!("retry_join entry {s:?} has surrounding blanks, quotes or line breaks"))
        } else {
            Ok(s)
        }
    }
);
impl From<JoinAddr> for String {
    fn from(v: JoinAddr) -> String {
        v.0
    }
}

/// Consul's gossip encryption key: base64 of 16 or 32 bytes. A secret: its
/// Debug output is redacted, and it is never serialized by the config.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct GossipKey(String);
impl TryFrom<String> for GossipKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
            Ok(bytes) if bytes.len() == 16 || bytes.len() == 32 => Ok(GossipKey(s)),
            Ok(bytes) => Err(format!(
                "the gossip key decodes to {} bytes; Consul needs 16 or 32 (generate one with `consul keygen`)",
                bytes.len()
            )),
            Err(_) => Err("the gossip key is not valid base64 (generate one with `consul keygen`)".to_string()),
        }
    }
}
impl GossipKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

/// An integer in MIN..=MAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);
impl<const MIN: u64, const MAX: u64> TryFrom<i64> for Bounded<MIN, MAX> {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u64::try_from(n) {
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(Bounded(v)),
            _ => Err(format!("{n} is out of range {MIN}-{MAX}")),
        }
    }
}

/// Seconds to wait for dockerd, 0 to 600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "u64")]
pub struct WaitSecs(pub u64);
impl TryFrom<i64> for WaitSecs {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u64::try_from(n) {
            Ok(v) if v <= 600 => Ok(WaitSecs(v)),
            _ => Err(format!("{n} is out of range 0-600 seconds")),
        }
    }
}
impl From<WaitSecs> for u64 {
    fn from(w: WaitSecs) -> u64 {
        w.0
    }
}

string_newtype!(
    /// An extra registrator option such as `-internal` or `-resync=30`;
    /// nodeprep adds `-ip` and the consul:// URI itself, URI last.
    RegistratorArg(String),
    |s| {
        if s.is_empty() || s.contains(char::is_whitespace) {
            Err(format!("registrator argument {s:?} must be one non-empty word (write -resync=30, not \"-resync 30\")"))
        } else if s.contains("://") {
            Err(format!("registrator argument {s:?} looks like a registry URI; nodeprep adds consul://<link address>:<http_port> itself"))
        } else if s == "-ip" || s.starts_with("-ip=") {
            Err("registrator's -ip is set by nodeprep from consul.bind_addr".to_string())
        } else {
            Ok(s)
        }
    }
);
impl From<RegistratorArg> for String {
    fn from(v: RegistratorArg) -> String {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/nodeprep/nodeprep.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn embedded_default_toml_parses_back_to_the_default() {
        assert_eq!(parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn default_is_seed_001_layout_with_corrections() {
        let c = Config::default();
        assert_eq!(c.link.name.0, "dummy0");
        assert_eq!(c.link.address.to_string(), "169.254.1.1/32");
        assert_eq!(c.consul.client_addr.to_string(), "127.0.0.1 169.254.1.1");
        assert_eq!(c.consul.bind_addr, BindAddr::Auto);
        assert_eq!(
            c.dnsmasq.listen,
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(169, 254, 1, 1)]
        );
        let vars: Vec<(String, String)> = c
            .environment
            .vars
            .iter()
            .map(|(k, v)| (k.0.clone(), v.0.clone()))
            .collect();
        assert_eq!(
            vars,
            vec![("CONSUL_HTTP_ADDR".into(), "169.254.1.1:8500".into())]
        );
    }

    #[test]
    fn derived_defaults_follow_the_link_address() {
        let c =
            parse("[link]\naddress = \"169.254.7.7/32\"\n[consul]\nhttp_port = 8501\n").unwrap();
        assert_eq!(c.consul.client_addr.to_string(), "127.0.0.1 169.254.7.7");
        assert_eq!(c.dnsmasq.listen[1], Ipv4Addr::new(169, 254, 7, 7));
        assert_eq!(
            c.environment.vars[&EnvName("CONSUL_HTTP_ADDR".into())].0,
            "169.254.7.7:8501"
        );
    }

    #[test]
    fn pinned_image_references_are_accepted() {
        for image in [
            "hashicorp/consul:1.20.1",
            "gliderlabs/registrator:v7",
            "localhost:5000/consul:1.20",
            "127.0.0.1:5999/nodeprep-test/absent:1",
            "registry.example.com/team/consul@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            parse(&format!("[consul]\nimage = \"{image}\"\n")).unwrap_or_else(|e| panic!("{image}: {e:#}"));
        }
    }

    #[test]
    fn gossip_key_never_appears_in_debug_output() {
        let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
        let c = parse(&format!("[consul]\nencrypt = \"{key}\"\n")).unwrap();
        assert!(!format!("{c:?}").contains(key));
        assert!(!serde_json::to_string(&c).unwrap().contains(key));
        // A mistyped key is not echoed in the error either.
        let typo = &key[..key.len() - 2];
        let e = err(&format!("[consul]\nencrypt = \"{typo}\"\n"));
        assert!(!e.contains(typo) && e.contains("line 2"), "{e}");
    }

    #[test]
    fn encrypt_file_is_read_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gossip.key");
        std::fs::write(&key, "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=\n").unwrap();
        let c = parse(&format!("[consul]\nencrypt_file = \"{}\"\n", key.display())).unwrap();
        assert_eq!(
            c.consul.cluster.encrypt.unwrap().expose(),
            "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        );
        std::fs::write(&key, "secret-but-wrong\n").unwrap();
        let e = err(&format!("[consul]\nencrypt_file = \"{}\"\n", key.display()));
        assert!(
            e.contains("consul.encrypt_file") && !e.contains("secret-but-wrong"),
            "{e}"
        );
    }

    #[test]
    fn environment_vars_add_to_the_managed_set() {
        let c = parse("[environment.vars]\nCONSUL_RPC_ADDR = \"169.254.1.1:8400\"\n").unwrap();
        assert_eq!(c.environment.vars.len(), 2);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[link]\nname = \"averyveryverylongname\"\n",
                &["line 2", "link.name", "15 bytes"],
            ),
            (
                "[link]\naddress = \"169.254.1.1/16\"\n",
                &["line 2", "link.address", "/32"],
            ),
            (
                "[link]\naddress = \"169.254.1.300/32\"\n",
                &["line 2", "link.address", "CIDR"],
            ),
            ("[link]\nnmae = \"dummy0\"\n", &["line 2", "nmae"]),
            (
                "[consul]\n\nbind_addr = \"10.0.0.x\"\n",
                &["line 3", "consul.bind_addr"],
            ),
            (
                "[consul]\nhttp_port = 70000\n",
                &["line 2", "consul.http_port", "65535"],
            ),
            (
                "[consul]\nhttp_port = \"8500\"\n",
                &["line 2", "consul.http_port"],
            ),
            (
                "[consul]\nclient_addr = \"127.0.0.1 nope\"\n",
                &["consul.client_addr", "nope"],
            ),
            (
                "[dnsmasq]\nlisten = [\"127.0.0.1\", \"::1x\"]\n",
                &["line 2", "dnsmasq.listen"],
            ),
            (
                "[dnsmasq]\nfile = \"relative/consul.conf\"\n",
                &["dnsmasq.file", "absolute"],
            ),
            (
                "[environment.vars]\n\"1BAD\" = \"x\"\n",
                &["line 2", "1BAD"],
            ),
            (
                "[environment.vars]\nFOO = \"a\\\"b\"\n",
                &["line 2", "environment.vars"],
            ),
            ("[bogus]\n", &["line 1", "bogus"]),
            ("link = 3\n", &["line 1", "link"]),
            (
                "[consul]\n\nbootstrap_expect = 3\n",
                &["line 3", "consul.bootstrap_expect", "servers only"],
            ),
            (
                "[consul]\nrole = \"server\"\n",
                &["consul.bootstrap_expect", "a server needs it"],
            ),
            ("[consul]\nrole = \"leader\"\n", &["line 2", "consul.role"]),
            (
                "[consul]\nencrypt = \"c2hvcnQ=\"\n",
                &["line 2", "consul.encrypt", "16 or 32"],
            ),
            (
                "[consul]\nencrypt = \"not base64!\"\n",
                &["line 2", "consul.encrypt", "base64"],
            ),
            (
                "[consul]\nretry_join = [\"10.0.0.1\", \"\"]\n",
                &["line 2", "consul.retry_join", "empty"],
            ),
            (
                "[consul]\nimage = \"hashicorp/consul\"\n",
                &["line 2", "consul.image", "not pinned"],
            ),
            (
                "[consul]\nimage = \"hashicorp/consul:latest\"\n",
                &["consul.image", "not pinned"],
            ),
            (
                "[consul]\nimage = \"Hashicorp/Consul:1.2\"\n",
                &["consul.image", "not a valid image"],
            ),
            ("[consul]\ncontainer = \"-bad\"\n", &["consul.container"]),
            (
                "[consul]\nencrypt_file = \"/nonexistent/key\"\n",
                &["line 2", "consul.encrypt_file", "/nonexistent/key"],
            ),
            (
                "[registrator]\nargs = [\"-resync 30\"]\n",
                &["line 2", "registrator.args"],
            ),
            (
                "[registrator]\nargs = [\"consul://1.2.3.4:8500\"]\n",
                &["registrator.args", "URI"],
            ),
            (
                "[docker]\nwait_secs = -1\n",
                &["line 2", "docker.wait_secs"],
            ),
        ];
        for (text, needles) in cases {
            let msg = err(text);
            assert!(msg.contains("/etc/nodeprep/nodeprep.toml"), "{msg}");
            for n in *needles {
                assert!(
                    msg.contains(n),
                    "expected {n:?} in error for {text:?}:\n{msg}"
                );
            }
        }
    }
}
