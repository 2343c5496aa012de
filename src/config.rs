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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    pub file: AbsPath,
    /// The managed variables: `CONSUL_HTTP_ADDR` plus whatever the file adds.
    pub vars: BTreeMap<EnvName, EnvValue>,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(File::default())
    }
}

impl Config {
    /// Fills in every default. Defaults that name the link address follow a
    /// configured `link.address`, so changing one key keeps the layout coherent.
    pub fn resolve(file: File) -> Config {
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
        };
        let mut vars = BTreeMap::new();
        vars.insert(
            EnvName("CONSUL_HTTP_ADDR".into()),
            EnvValue(format!("{link_ip}:{}", http_port.0)),
        );
        // Variables from the file are added to the managed set and may
        // override the default value of CONSUL_HTTP_ADDR.
        vars.extend(file.environment.vars.unwrap_or_default());
        Config {
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
        }
    }

    /// Parses configuration text. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let invalid = || format!("invalid configuration in {}", origin.display());
        let de = toml::Deserializer::parse(text).with_context(invalid)?;
        // serde_path_to_error records the key path ("consul.bind_addr") while
        // the toml error itself carries the line, column and offending text.
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            anyhow::Error::new(e.into_inner()).context(format!("{}: key `{key}`", invalid()))
        })?;
        Ok(Config::resolve(file))
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
