//! Validated value types of the configuration. Each is deserialized from the
//! file through `TryFrom`, so a bad value is refused with the toml parser's
//! line and column, and serialized back as the same text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

pub(super) fn abs(p: &str) -> AbsPath {
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
    /// the cloud metadata address 169.254.169.254, into the dummy link. The
    /// type holds either family; the file accepts IPv4 until nodeprep
    /// supports an IPv6 layout end to end.
    LinkAddress(IpNet),
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
            Ok(IpNet::V4(net))
        }
    }
);
impl LinkAddress {
    pub fn ip(&self) -> IpAddr {
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

/// Consul's `bind_addr`: an explicit address (IPv4 in the file for now), or
/// `auto` for the primary IPv4 address of the interface holding the default
/// route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum BindAddr {
    Auto,
    Addr(IpAddr),
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
        if ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_link_local()
        {
            return Err(format!(
                "{s:?} cannot be bind_addr: Consul gossips on it, so it must be an address other hosts can reach"
            ));
        }
        Ok(BindAddr::Addr(IpAddr::V4(ip)))
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
    /// A DNS name to look up (letters, digits and '-' in dot-separated
    /// labels), e.g. for the `upstream-dns` probe.
    DnsName(String),
    |s| {
        let name = s.strip_suffix('.').unwrap_or(&s);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if ok {
            Ok(s)
        } else {
            Err(format!("{s:?} is not a DNS name (letters, digits and '-' in dot-separated labels)"))
        }
    }
);
impl From<DnsName> for String {
    fn from(v: DnsName) -> String {
        v.0
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
    /// escape syntax there, so quotes, backslashes, '$', '#' (pam_env ends
    /// the value there) and control characters are refused rather than
    /// written in a form pam_env would misread; so is a value too long for
    /// pam_env's line buffer.
    EnvValue(String),
    |s| {
        if let Some(c) = s.chars().find(|c| matches!(c, '"' | '\'' | '\\' | '$' | '`' | '#') || c.is_control()) {
            Err(format!("value {s:?} contains {c:?}, which /etc/environment cannot hold safely"))
        } else if s.len() > 1024 {
            Err(format!("the value is {} bytes long; /etc/environment takes at most 1024 here", s.len()))
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

/// Who answers DNS on the link address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsBackend {
    /// dnsmasq forwards the consul domain to the agent (the recipe).
    Dnsmasq,
    /// systemd-resolved listens on the link address too and routes the
    /// consul domain to the agent (systemd 247 or newer).
    Resolved,
}

/// Which service keeps the dummy link across reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkBackend {
    /// NetworkManager when `NetworkManager.service` is active, else
    /// systemd-networkd.
    Auto,
    Networkd,
    #[serde(rename = "networkmanager")]
    NetworkManager,
}

/// Where the Docker Engine API answers: `auto` (the first of
/// `/var/run/docker.sock` and `/run/podman/podman.sock` that answers), or a
/// socket path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum DockerSocket {
    Auto,
    Path(PathBuf),
}
impl TryFrom<String> for DockerSocket {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "auto" {
            return Ok(DockerSocket::Auto);
        }
        AbsPath::try_from(s)
            .map(|p| DockerSocket::Path(p.0))
            .map_err(|e| format!("{e}, or \"auto\""))
    }
}
impl From<DockerSocket> for String {
    fn from(v: DockerSocket) -> String {
        match v {
            DockerSocket::Auto => "auto".into(),
            DockerSocket::Path(p) => p.to_string_lossy().into_owned(),
        }
    }
}

/// Which engine serves the Docker Engine API: told apart by its answer
/// (`auto`), or stated (then the answer must agree; `--root` runs use it
/// to know which engine's DNS setting to write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    Auto,
    Docker,
    Podman,
}

/// When nodeprep may restart dockerd so that it reads a changed
/// `daemon.json` (a restart stops running containers unless live-restore
/// is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DockerRestart {
    /// When no container but nodeprep's own runs, or live-restore is on.
    WhenIdle,
    Always,
    Never,
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
