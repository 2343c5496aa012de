//! The kernel's view of links, addresses and routes, through rtnetlink.
//! One small verb per netlink operation; nodeprep never runs `ip`.
//!
//! rtnetlink is async; nodeprep is a short sequential CLI, so this module owns
//! a current-thread tokio runtime and offers blocking verbs. Nothing else in
//! the crate sees async code.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, Context, Result};
use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkDummy, LinkUnspec, RouteMessageBuilder};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;
const EPERM: i32 = 1;
const EADDRNOTAVAIL: i32 = 99;
/// The main routing table, where `ip route` and DHCP clients put the default route.
const RT_TABLE_MAIN: u32 = 254;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    /// `IFLA_INFO_KIND` ("dummy", "bridge", ...); `None` for links without
    /// one, such as physical NICs and loopback.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP). A dummy link's operational state stays
    /// "UNKNOWN", so IFF_UP is what "up" means for it.
    pub up: bool,
    /// Addresses of every family with their prefix lengths, in kernel order.
    pub addresses: Vec<IpNet>,
}

/// The IPv4 default route's interface and that interface's primary address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub ifname: String,
    pub index: u32,
    pub address: Option<Ipv4Addr>,
}

/// How a create ended: the kernel made the link, or it was already there
/// (the dummy module creates `dummy0` by itself when it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("cannot start the netlink event loop")?;
        let handle = rt.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("cannot open a NETLINK_ROUTE socket")?;
            tokio::spawn(conn);
            anyhow::Ok(handle)
        })?;
        Ok(Netlink { rt, handle })
    }

    /// The link called `name` with its addresses, or `None` if absent.
    pub fn link(&self, name: &str) -> Result<Option<LinkState>> {
        self.rt.block_on(async {
            let mut links = self
                .handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute();
            let msg = match links.try_next().await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(None),
                Err(e) if errno(&e) == Some(ENODEV) => return Ok(None),
                Err(e) => return Err(explain(e, &format!("cannot read link {name}"))),
            };
            let addresses = self.addresses(msg.header.index).await?;
            Ok(Some(link_state(&msg, addresses)))
        })
    }

    /// Creates a dummy link, administratively up.
    pub fn create_dummy(&self, name: &str) -> Result<Created> {
        self.rt.block_on(async {
            let msg = LinkDummy::new(name).up().build();
            match self.handle.link().add(msg).execute().await {
                Ok(()) => Ok(Created::New),
                // Loading the dummy module creates dummy0 on its own
                // (numdummies=1 by default), so a create racing a module
                // load meets EEXIST: the caller re-reads and verifies.
                Err(e) if errno(&e) == Some(EEXIST) => Ok(Created::AlreadyExisted),
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => Err(anyhow!(
                    "cannot create link {name}: kernel has no dummy link support (EOPNOTSUPP): \
                     load the `dummy` module (modprobe dummy) or use a kernel built with CONFIG_DUMMY"
                )),
                Err(e) => Err(explain(e, &format!("cannot create dummy link {name}"))),
            }
        })
    }

    pub fn set_up(&self, name: &str, index: u32) -> Result<()> {
        self.rt.block_on(async {
            let msg = LinkUnspec::new_with_index(index).up().build();
            self.handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| explain(e, &format!("cannot set link {name} up")))
        })
    }

    pub fn add_address(&self, name: &str, index: u32, net: IpNet) -> Result<()> {
        self.rt.block_on(async {
            match self
                .handle
                .address()
                .add(index, net.addr(), net.prefix_len())
                .execute()
                .await
            {
                Ok(()) => Ok(()),
                // Someone (networkd, an operator) added it between our read and
                // our write: the desired state holds.
                Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
                Err(e) => Err(explain(
                    e,
                    &format!("cannot add address {net} to link {name}"),
                )),
            }
        })
    }

    /// Removes one address from a link; one that is gone already is fine.
    pub fn del_address(&self, name: &str, index: u32, net: IpNet) -> Result<()> {
        self.rt.block_on(async {
            let msgs = self.address_messages(index).await?;
            let Some(msg) = msgs.into_iter().find(|m| address_of(m) == Some(net)) else {
                return Ok(());
            };
            match self.handle.address().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
                Err(e) => Err(explain(
                    e,
                    &format!("cannot remove address {net} from link {name}"),
                )),
            }
        })
    }

    /// Deletes a link; one that is gone already is fine.
    pub fn delete(&self, name: &str, index: u32) -> Result<()> {
        self.rt.block_on(async {
            match self.handle.link().del(index).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
                Err(e) => Err(explain(e, &format!("cannot delete link {name}"))),
            }
        })
    }

    /// The interface holding the IPv4 default route in the main table (the
    /// lowest metric when there are several) and its primary IPv4 address.
    pub fn default_route(&self) -> Result<Option<DefaultRoute>> {
        self.rt.block_on(async {
            let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| explain(e, "cannot read the routing table"))?;
            let best = routes
                .iter()
                .filter(|r| is_ipv4_default(r))
                .filter_map(|r| Some((oif(r)?, priority(r))))
                .min_by_key(|&(_, prio)| prio);
            let Some((index, _)) = best else {
                return Ok(None);
            };
            let mut links = self.handle.link().get().match_index(index).execute();
            let msg = links
                .try_next()
                .await
                .map_err(|e| explain(e, &format!("cannot read link #{index}")))?
                .ok_or_else(|| anyhow!("the default route's link #{index} disappeared"))?;
            let ifname = link_name(&msg).unwrap_or_else(|| format!("#{index}"));
            let address = self.primary_ipv4(index).await?;
            Ok(Some(DefaultRoute {
                ifname,
                index,
                address,
            }))
        })
    }

    async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs.iter().filter_map(address_of).collect())
    }

    /// The first address that is not flagged secondary: the one the kernel
    /// uses as source by default, which is what "primary" means for Consul.
    async fn primary_ipv4(&self, index: u32) -> Result<Option<Ipv4Addr>> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs
            .iter()
            .filter_map(ipv4_of)
            .find(|(_, secondary)| !secondary)
            .map(|(net, _)| net.addr()))
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| explain(e, &format!("cannot read the addresses of link #{index}")))
    }
}

fn link_state(msg: &LinkMessage, addresses: Vec<IpNet>) -> LinkState {
    let kind = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    });
    LinkState {
        index: msg.header.index,
        kind,
        up: msg.header.flags.contains(LinkFlags::Up),
        addresses,
    }
}

fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The address a message describes, of either family. IFA_LOCAL is the
/// interface's own address; IFA_ADDRESS is the peer on point-to-point links
/// (and the only one for IPv6). Prefer LOCAL when present.
fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    let addr = pick(true).or_else(|| pick(false))?;
    match addr {
        IpAddr::V4(v4) => Ipv4Net::new(v4, msg.header.prefix_len).ok().map(IpNet::V4),
        IpAddr::V6(v6) => Ipv6Net::new(v6, msg.header.prefix_len).ok().map(IpNet::V6),
    }
}

fn ipv4_of(msg: &AddressMessage) -> Option<(Ipv4Net, bool)> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links. Prefer LOCAL when present.
    let addr = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        })?;
    let net = Ipv4Net::new(addr, msg.header.prefix_len).ok()?;
    Some((
        net,
        msg.header.flags.contains(AddressHeaderFlags::Secondary),
    ))
}

fn is_ipv4_default(r: &RouteMessage) -> bool {
    r.header.address_family == AddressFamily::Inet
        && r.header.destination_prefix_length == 0
        && r.header.kind == RouteType::Unicast
        && table(r) == RT_TABLE_MAIN
}

fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn priority(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Turns a netlink error into a message with the errno's name and a hint.
fn explain(e: rtnetlink::Error, what: &str) -> anyhow::Error {
    match errno(&e) {
        Some(EPERM) => {
            anyhow!("{what}: operation not permitted (EPERM): run nodeprep as root (CAP_NET_ADMIN)")
        }
        Some(code) => {
            let io = std::io::Error::from_raw_os_error(code);
            anyhow!("{what}: {io}")
        }
        None => anyhow!("{what}: {e}"),
    }
}
