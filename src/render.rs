//! Pure rendering of every managed file: configuration in, bytes out.
//! Golden-text tests below pin each file's exact content.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use askama::Template;
use serde::Serialize;

use crate::config::{Config, DnsBackend, Role};
use crate::envfile;

#[derive(Template)]
#[template(path = "link.netdev", escape = "none")]
struct Netdev<'a> {
    name: &'a str,
}

#[derive(Template)]
#[template(path = "link.network", escape = "none")]
struct Network<'a> {
    name: &'a str,
    address: String,
    dns: String,
    domain: &'a str,
}

#[derive(Template)]
#[template(path = "dnsmasq.conf", escape = "none")]
struct DnsmasqConf<'a> {
    domain: &'a str,
    consul_dns: String,
    listen: &'a [IpAddr],
    link_ip: IpAddr,
    resolv_file: Option<String>,
}

/// Consul's interface settings, in the order Consul's docs list them.
#[derive(Serialize)]
struct Interfaces {
    client_addr: String,
    bind_addr: String,
    /// Explicit, so the agent listens where dnsmasq forwards and the probes
    /// and registrator look, whatever `consul.http_port`/`dns_port` say.
    ports: Ports,
}

#[derive(Serialize)]
struct Ports {
    http: u16,
    dns: u16,
}

fn finish(rendered: askama::Result<String>) -> String {
    // The templates take only plain strings and addresses, which cannot fail
    // to render; an error here is a bug in nodeprep, not in the input.
    let mut s = rendered.expect("rendering a built-in template");
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// File names of the systemd-networkd pair. The `10-` prefix matters:
/// networkd applies the first .network file in lexical order that matches a
/// link, and distribution catch-alls (e.g. `99-default.link`, `80-*.network`)
/// come later.
pub fn networkd_names(link: &str) -> (String, String) {
    (format!("10-{link}.netdev"), format!("10-{link}.network"))
}

pub fn netdev(cfg: &Config) -> String {
    finish(
        Netdev {
            name: &cfg.link.name.0,
        }
        .render(),
    )
}

pub fn network(cfg: &Config) -> String {
    finish(
        Network {
            name: &cfg.link.name.0,
            address: cfg.link.address.to_string(),
            dns: link_dns_server(cfg),
            domain: &cfg.consul.domain.0,
        }
        .render(),
    )
}

/// The DNS server systemd-resolved asks for the consul domain, through the
/// dummy link: dnsmasq on port 53 of the link address, or with
/// `dns.backend = "resolved"` the agent's DNS port there (resolved and
/// networkd take `ADDRESS:PORT`, `[v6]:PORT` for IPv6).
pub fn link_dns_server(cfg: &Config) -> String {
    let ip = cfg.link.address.ip();
    match cfg.dns.backend {
        DnsBackend::Dnsmasq => ip.to_string(),
        DnsBackend::Resolved => std::net::SocketAddr::new(ip, cfg.consul.dns_port.0).to_string(),
    }
}

/// NetworkManager's keyfile for the link: `<link>.nmconnection`.
pub fn nm_keyfile_name(link: &str) -> String {
    format!("{link}.nmconnection")
}

/// The `conf.d` snippet of the networkd backend. `99-` sorts it after the
/// numbered snippets distributions ship, and `+=` adds to their list.
pub fn nm_unmanaged_name(link: &str) -> String {
    format!("99-nodeprep-{link}.conf")
}

/// The profile's UUID: the same on every host and every run for a link
/// name (a name-based UUID, version 5 layout, from SHA-256), so nmcli is
/// always pointed at nodeprep's own profile, whatever else is called
/// `dummy0`.
pub fn nm_uuid(link: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("nodeprep networkmanager profile {link}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The link's DNS server as NetworkManager writes it: the address, or with
/// `dns.backend = "resolved"` a `dns+udp://ADDRESS:PORT` URI (NetworkManager
/// 1.52 parses it; 1.58.1 is the first to pass the port on to
/// systemd-resolved).
pub fn nm_dns_server(cfg: &Config) -> String {
    match cfg.dns.backend {
        DnsBackend::Dnsmasq => cfg.link.address.ip().to_string(),
        DnsBackend::Resolved => format!("dns+udp://{}", link_dns_server(cfg)),
    }
}

/// The connection profile of the networkmanager backend: the same link,
/// address and DNS routing as the networkd pair.
pub fn nm_keyfile(cfg: &Config) -> String {
    let link = &cfg.link.name.0;
    format!(
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # NetworkManager creates the {link} link from this profile at every boot.\n\
         [connection]\n\
         id={link}\n\
         uuid={uuid}\n\
         type=dummy\n\
         interface-name={link}\n\
         autoconnect=true\n\
         \n\
         [ipv4]\n\
         method=manual\n\
         address1={address}\n\
         # Host processes that ask systemd-resolved: the {domain} domain, and only it,\n\
         # goes to this server. No gateway and never-default: never resolved's default\n\
         # route. Where NetworkManager writes /etc/resolv.conf itself, priority 200\n\
         # lists this server after the uplink's (100).\n\
         dns={dns};\n\
         dns-search=~{domain};\n\
         dns-priority=200\n\
         never-default=true\n\
         \n\
         [ipv6]\n\
         method=disabled\n",
        uuid = nm_uuid(link),
        address = cfg.link.address,
        dns = nm_dns_server(cfg),
        domain = cfg.consul.domain.0,
    )
}

/// The networkd backend's NetworkManager snippet: NetworkManager leaves the
/// link to systemd-networkd.
pub fn nm_unmanaged(cfg: &Config) -> String {
    format!(
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # systemd-networkd keeps {link} (network.backend = \"networkd\"): NetworkManager\n\
         # leaves it alone. \"+=\" adds it to the list other snippets set.\n\
         [keyfile]\n\
         unmanaged-devices+=interface-name:{link}\n",
        link = cfg.link.name
    )
}

/// Podman's `containers.conf` drop-in: the link address as the default DNS
/// server of every container created from now on.
pub fn podman_dropin(cfg: &Config) -> String {
    format!(
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # The default DNS server of every container Podman creates from now on\n\
         # (containers that exist keep theirs).\n\
         [containers]\n\
         dns_servers = [\"{ip}\"]\n",
        ip = cfg.link.address.ip()
    )
}

/// The dnsmasq drop-in. `resolv_file` is the upstream list already decided by
/// the caller (it depends on the host, see `resources::dnsmasq`).
pub fn dnsmasq(cfg: &Config, resolv_file: Option<&Path>) -> String {
    finish(
        DnsmasqConf {
            domain: &cfg.consul.domain.0,
            // dnsmasq's syntax is ADDRESS#PORT for both families (no brackets).
            consul_dns: format!("{}#{}", cfg.link.address.ip(), cfg.consul.dns_port.0),
            listen: &cfg.dnsmasq.listen,
            link_ip: cfg.link.address.ip(),
            resolv_file: resolv_file.map(|p| p.display().to_string()),
        }
        .render(),
    )
}

/// The dnsmasq drop-in of `dns.backend = "resolved"`: an installed dnsmasq
/// must not take port 53 of the link address from systemd-resolved.
pub fn dnsmasq_keep_off(cfg: &Config) -> String {
    format!(
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # dns.backend = \"resolved\": systemd-resolved answers on {ip}:53; dnsmasq stays\n\
         # off {link} and binds only the addresses it is given (bind-dynamic).\n\
         bind-dynamic\n\
         except-interface={link}\n",
        ip = cfg.link.address.ip(),
        link = cfg.link.name
    )
}

/// The systemd-resolved drop-in of `dns.backend = "resolved"`: resolved
/// answers on the link address too, for containers.
pub fn resolved_dropin(cfg: &Config) -> String {
    format!(
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # dns.backend = \"resolved\": systemd-resolved also answers on the link address,\n\
         # every container's DNS server. The consul domain is routed to the agent through\n\
         # {link}'s own DNS settings; every other name goes to the host's upstreams.\n\
         [Resolve]\n\
         DNSStubListenerExtra={ip}\n",
        link = cfg.link.name,
        ip = cfg.link.address.ip()
    )
}

/// `interfaces.json` for the Consul agent, with bind_addr already resolved.
pub fn consul_interfaces(cfg: &Config, bind_addr: IpAddr) -> String {
    let doc = Interfaces {
        client_addr: cfg.consul.client_addr.to_string(),
        bind_addr: bind_addr.to_string(),
        ports: Ports {
            http: cfg.consul.http_port.0,
            dns: cfg.consul.dns_port.0,
        },
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("serializing plain strings");
    s.push('\n');
    s
}

#[derive(Serialize)]
struct UiConfig {
    enabled: bool,
}

/// The agent's cluster settings, in the order an operator reads them.
#[derive(Serialize)]
struct Agent<'a> {
    datacenter: &'a str,
    server: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    retry_join: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_expect: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ui_config: Option<UiConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypt: Option<&'a str>,
}

/// `agent.json`: role, datacenter, joins and the gossip key. The second
/// value is the secret the text holds, if any, so callers can protect the
/// file (mode 0640) and redact it from diffs.
pub fn consul_agent(cfg: &Config) -> (String, Option<String>) {
    let c = &cfg.consul.cluster;
    let server = c.role == Role::Server;
    let doc = Agent {
        datacenter: &c.datacenter.0,
        server,
        node_name: c.node_name.as_ref().map(|n| n.0.as_str()),
        retry_join: c.retry_join.iter().map(|j| j.0.as_str()).collect(),
        bootstrap_expect: c.bootstrap_expect,
        ui_config: (server && c.ui).then_some(UiConfig { enabled: true }),
        encrypt: c.encrypt.as_ref().map(|k| k.expose()),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("serializing plain strings");
    s.push('\n');
    (s, c.encrypt.as_ref().map(|k| k.expose().to_string()))
}

/// The managed variables of `/etc/environment`, by name.
pub fn environment_vars(cfg: &Config) -> BTreeMap<String, String> {
    cfg.environment
        .vars
        .iter()
        .map(|(k, v)| (k.0.clone(), v.0.clone()))
        .collect()
}

/// `/etc/environment` with the managed variables merged into `existing`.
pub fn environment(cfg: &Config, existing: &[u8]) -> Vec<u8> {
    envfile::merge(existing, &environment_vars(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn netdev_golden() {
        assert_eq!(
            netdev(&Config::default()),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             # systemd-networkd creates the dummy0 link at boot from this file.\n\
             [NetDev]\n\
             Name=dummy0\n\
             Kind=dummy\n"
        );
    }

    #[test]
    fn network_golden() {
        assert_eq!(
            network(&Config::default()),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             [Match]\n\
             Name=dummy0\n\
             \n\
             [Network]\n\
             # Host processes ask systemd-resolved: it sends the consul domain, and only\n\
             # it, to this server, and every other name to the host's upstreams.\n\
             DNS=169.254.1.1\n\
             Domains=~consul\n\
             DNSDefaultRoute=no\n\
             \n\
             [Address]\n\
             Address=169.254.1.1/32\n\
             # As nodeprep adds it live. networkd would otherwise give a 169.254.0.0/16\n\
             # address link scope and first probe it for conflicts (seconds at every boot,\n\
             # on a link nothing else is on).\n\
             Scope=global\n\
             DuplicateAddressDetection=none\n\
             \n\
             [Link]\n\
             # A dummy link has no carrier to wait for: keep it out of network-online.target.\n\
             RequiredForOnline=no\n"
        );
    }

    #[test]
    fn nm_keyfile_golden() {
        assert_eq!(
            nm_keyfile(&Config::default()),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             # NetworkManager creates the dummy0 link from this profile at every boot.\n\
             [connection]\n\
             id=dummy0\n\
             uuid=a640c5cb-2c3d-5b75-99b1-91b69a3cf149\n\
             type=dummy\n\
             interface-name=dummy0\n\
             autoconnect=true\n\
             \n\
             [ipv4]\n\
             method=manual\n\
             address1=169.254.1.1/32\n\
             # Host processes that ask systemd-resolved: the consul domain, and only it,\n\
             # goes to this server. No gateway and never-default: never resolved's default\n\
             # route. Where NetworkManager writes /etc/resolv.conf itself, priority 200\n\
             # lists this server after the uplink's (100).\n\
             dns=169.254.1.1;\n\
             dns-search=~consul;\n\
             dns-priority=200\n\
             never-default=true\n\
             \n\
             [ipv6]\n\
             method=disabled\n"
        );
        let mut cfg = Config::default();
        cfg.dns.backend = DnsBackend::Resolved;
        assert!(nm_keyfile(&cfg).contains("\ndns=dns+udp://169.254.1.1:8600;\n"));
    }

    #[test]
    fn nm_uuid_is_stable_and_well_formed() {
        let u = nm_uuid("dummy0");
        assert_eq!(u, nm_uuid("dummy0"));
        assert_ne!(u, nm_uuid("dummy1"));
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('5') && "89ab".contains(&parts[3][..1]));
    }

    #[test]
    fn nm_unmanaged_and_podman_dropin_golden() {
        assert_eq!(
            nm_unmanaged(&Config::default()),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             # systemd-networkd keeps dummy0 (network.backend = \"networkd\"): NetworkManager\n\
             # leaves it alone. \"+=\" adds it to the list other snippets set.\n\
             [keyfile]\n\
             unmanaged-devices+=interface-name:dummy0\n"
        );
        assert_eq!(
            podman_dropin(&Config::default()),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             # The default DNS server of every container Podman creates from now on\n\
             # (containers that exist keep theirs).\n\
             [containers]\n\
             dns_servers = [\"169.254.1.1\"]\n"
        );
    }

    #[test]
    fn networkd_names_sort_first() {
        assert_eq!(
            networkd_names("dummy0"),
            ("10-dummy0.netdev".into(), "10-dummy0.network".into())
        );
    }

    #[test]
    fn dnsmasq_golden_without_resolved() {
        assert_eq!(
            dnsmasq(&Config::default(), None),
            "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
             # Queries for the consul domain go to the Consul agent's DNS interface.\n\
             server=/consul/169.254.1.1#8600\n\
             listen-address=127.0.0.1\n\
             listen-address=169.254.1.1\n\
             # bind-dynamic binds only the addresses above (never the wildcard), so dnsmasq\n\
             # coexists with systemd-resolved on 127.0.0.53, and it binds 169.254.1.1 when\n\
             # the link appears, even if that happens after dnsmasq started.\n\
             bind-dynamic\n"
        );
    }

    #[test]
    fn dnsmasq_golden_with_resolved_upstreams() {
        let text = dnsmasq(
            &Config::default(),
            Some(&PathBuf::from("/run/systemd/resolve/resolv.conf")),
        );
        assert!(
            text.ends_with(
                "bind-dynamic\n\
             # Upstream servers for every other name (with systemd-resolved, its real list,\n\
             # never its 127.0.0.53 stub; dnsmasq skips its own addresses in the list).\n\
             resolv-file=/run/systemd/resolve/resolv.conf\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn dnsmasq_follows_domain_port_and_listen() {
        let cfg = Config::parse(
            "[link]\naddress = \"169.254.9.9/32\"\n[consul]\ndns_port = 53530\ndomain = \"dc1.example\"\n[dnsmasq]\nlisten = [\"169.254.9.9\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let text = dnsmasq(&cfg, None);
        assert!(
            text.contains(
                "\nserver=/dc1.example/169.254.9.9#53530\nlisten-address=169.254.9.9\n# bind"
            ),
            "{text}"
        );
    }

    #[test]
    fn consul_interfaces_golden() {
        assert_eq!(
            consul_interfaces(&Config::default(), IpAddr::from([10, 0, 0, 5])),
            "{\n  \"client_addr\": \"127.0.0.1 169.254.1.1\",\n  \"bind_addr\": \"10.0.0.5\",\n  \"ports\": {\n    \"http\": 8500,\n    \"dns\": 8600\n  }\n}\n"
        );
    }

    fn agent(toml: &str) -> (String, Option<String>) {
        consul_agent(&Config::parse(toml, Path::new("t.toml")).unwrap())
    }

    #[test]
    fn agent_golden_client() {
        assert_eq!(
            agent("[consul]\nretry_join = [\"10.0.0.10\", \"provider=aws tag_key=consul tag_value=server\"]\n"),
            (
                "{\n  \"datacenter\": \"dc1\",\n  \"server\": false,\n  \"retry_join\": [\n    \"10.0.0.10\",\n    \"provider=aws tag_key=consul tag_value=server\"\n  ]\n}\n".to_string(),
                None
            )
        );
    }

    #[test]
    fn agent_golden_default_client_alone() {
        assert_eq!(
            agent("").0,
            "{\n  \"datacenter\": \"dc1\",\n  \"server\": false\n}\n"
        );
    }

    #[test]
    fn agent_golden_single_server() {
        // Seed 000's single server (-server -bootstrap): bootstrap_expect = 1.
        assert_eq!(
            agent("[consul]\nrole = \"server\"\nbootstrap_expect = 1\nui = true\nnode_name = \"consul-1\"\n").0,
            "{\n  \"datacenter\": \"dc1\",\n  \"server\": true,\n  \"node_name\": \"consul-1\",\n  \"bootstrap_expect\": 1,\n  \"ui_config\": {\n    \"enabled\": true\n  }\n}\n"
        );
    }

    #[test]
    fn agent_golden_three_servers_with_gossip_key() {
        let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
        let (text, secret) = agent(&format!(
            "[consul]\nrole = \"server\"\nbootstrap_expect = 3\ndatacenter = \"eu-west\"\nretry_join = [\"10.0.0.10\", \"10.0.0.11\", \"10.0.0.12\"]\nencrypt = \"{key}\"\n"
        ));
        assert_eq!(
            text,
            format!("{{\n  \"datacenter\": \"eu-west\",\n  \"server\": true,\n  \"retry_join\": [\n    \"10.0.0.10\",\n    \"10.0.0.11\",\n    \"10.0.0.12\"\n  ],\n  \"bootstrap_expect\": 3,\n  \"encrypt\": \"{key}\"\n}}\n")
        );
        assert_eq!(secret.as_deref(), Some(key));
    }

    #[test]
    fn environment_golden() {
        assert_eq!(
            environment(&Config::default(), b"PATH=/usr/bin\n"),
            b"PATH=/usr/bin\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n"
        );
    }
}
