//! The configuration file as written: every key optional, unknown keys
//! refused. Values are validated while they are deserialized (the newtypes of
//! [`super::types`]), so the toml parser attaches the line, column and key of a
//! bad value to its error; defaults are filled in by [`super::resolve`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::types::*;

/// The configuration as written in the file. Optional keys whose default
/// derives from another key (`dnsmasq.listen` from `link.address`, for example)
/// stay `None` here and are resolved by [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub link: LinkFile,
    #[serde(default)]
    pub network: NetworkFile,
    #[serde(default)]
    pub networkd: NetworkdFile,
    #[serde(default)]
    pub networkmanager: NetworkManagerFile,
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
    #[serde(default)]
    pub state: StateFile,
    #[serde(default)]
    pub dns: DnsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub dir: Option<AbsPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesFile {
    pub timeout_ms: Option<Bounded<50, 60_000>>,
    pub upstream_name: Option<DnsName>,
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
pub struct NetworkFile {
    pub backend: Option<NetworkBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkManagerFile {
    pub connections_dir: Option<AbsPath>,
    pub conf_dir: Option<AbsPath>,
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
    pub socket: Option<DockerSocket>,
    pub engine: Option<EngineChoice>,
    pub wait_secs: Option<WaitSecs>,
    pub daemon_dns: Option<bool>,
    pub daemon_json: Option<AbsPath>,
    pub podman_conf: Option<AbsPath>,
    pub restart: Option<DockerRestart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    pub backend: Option<DnsBackend>,
    pub resolved_dropin: Option<AbsPath>,
    pub resolv_conf: Option<AbsPath>,
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
