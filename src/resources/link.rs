//! `link`: the dummy link with its address, administratively up.
//!
//! This makes the live state now; the networkd files make it survive
//! reboots. nodeprep never deletes a link it did not create: one of another
//! kind under the configured name is an error that names the kind, and
//! `remove` takes away only nodeprep's address, deleting the link itself only
//! when nodeprep created it and nothing else lives on it.

use anyhow::{bail, Result};
use ipnet::IpNet;

use crate::engine::{Action, Ensure, Forget, Host, LinkOp, Plan, Resource, Want};
use crate::sys::netlink::LinkState;

pub struct Link;

pub enum Seen {
    /// `--root`: the live link is not managed.
    Offline,
    Live {
        link: Option<LinkState>,
        /// The record says nodeprep created it.
        created_by_nodeprep: bool,
    },
}

impl Resource for Link {
    const ID: &'static str = "link";
    const DEPENDS_ON: &'static [&'static str] = &[];
    type Observed = Seen;

    fn observe(host: &Host, _: Ensure) -> Result<Seen> {
        if host.offline() {
            return Ok(Seen::Offline);
        }
        let name = &host.cfg.link.name.0;
        Ok(Seen::Live {
            link: host.facts.netlink()?.link(name)?,
            created_by_nodeprep: host.store.record.links.contains(name),
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let Seen::Live {
            link,
            created_by_nodeprep,
        } = seen
        else {
            return Ok(Plan::skipped("live link not managed under --root"));
        };
        let name = &want.cfg.link.name.0;
        let nets = want.cfg.link.addresses();
        match want.ensure {
            Ensure::Present => present(name, &nets, link.as_ref()),
            Ensure::Absent => Ok(absent(name, &nets, link.as_ref(), *created_by_nodeprep)),
        }
    }
}

/// Addresses the kernel gives a link by itself (IPv6 link-local, when the
/// link comes up): never nodeprep's, never anyone's to report.
fn automatic(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(v6) if v6.addr().segments()[0] & 0xffc0 == 0xfe80)
}

/// Addresses on the link that are neither nodeprep's nor automatic.
fn foreign<'a>(link: &'a LinkState, nets: &[IpNet]) -> Vec<&'a IpNet> {
    link.addresses
        .iter()
        .filter(|a| !nets.contains(a) && !automatic(a))
        .collect()
}

fn check_kind(name: &str, link: &LinkState) -> Result<()> {
    match link.kind.as_deref() {
        Some("dummy") => Ok(()),
        Some(kind) => bail!(
            "link {name} exists but is a {kind}, not dummy: nodeprep never deletes a link it did not \
             create; remove it yourself (ip link del {name}) or choose another link.name"
        ),
        None => bail!(
            "link {name} exists but has no link kind (a physical or loopback device?), not dummy: \
             choose another link.name"
        ),
    }
}

/// Pure: the actions that turn `observed` into a dummy link `name` holding
/// `nets` (one per family), up. Other addresses are reported, never removed:
/// they may belong to someone else.
pub fn present(name: &str, nets: &[IpNet], observed: Option<&LinkState>) -> Result<Plan> {
    let add = |net: &IpNet| {
        Action::Link(LinkOp::AddAddress {
            name: name.to_string(),
            net: *net,
        })
    };
    let Some(link) = observed else {
        let mut actions = vec![Action::Link(LinkOp::CreateDummy {
            name: name.to_string(),
        })];
        actions.extend(nets.iter().map(add));
        return Ok(Plan {
            actions,
            state: format!("{name} absent"),
            ..Plan::default()
        });
    };
    check_kind(name, link)?;
    let held: Vec<String> = nets
        .iter()
        .map(|n| {
            if link.addresses.contains(n) {
                n.to_string()
            } else {
                format!("without {n}")
            }
        })
        .collect();
    let mut plan = Plan {
        state: format!(
            "{name} {} {}",
            held.join(" "),
            if link.up { "up" } else { "down" }
        ),
        ..Plan::default()
    };
    // Keyed by family: each desired address is looked for among the link's
    // addresses of its own family.
    plan.actions.extend(
        nets.iter()
            .filter(|n| {
                !link
                    .addresses
                    .iter()
                    .filter(|a| same_family(a, n))
                    .any(|a| a == *n)
            })
            .map(add),
    );
    if !link.up {
        plan.actions.push(Action::Link(LinkOp::SetUp {
            name: name.to_string(),
        }));
    }
    let others = foreign(link, nets);
    if !others.is_empty() {
        plan.notes
            .push(format!("also holds {} (left alone)", join(&others)));
    }
    Ok(plan)
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

fn join(nets: &[&IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pure: what undoing the link takes. Only a dummy link is touched: its
/// nodeprep address goes; the link itself goes only when nodeprep created it
/// and no other address lives on it.
pub fn absent(name: &str, nets: &[IpNet], observed: Option<&LinkState>, created: bool) -> Plan {
    let forget = vec![Forget::Link(name.to_string())];
    let Some(link) = observed else {
        return Plan {
            state: format!("{name} absent"),
            forget,
            ..Plan::default()
        };
    };
    if link.kind.as_deref() != Some("dummy") {
        return Plan {
            state: format!(
                "{name} is a {}, not nodeprep's dummy link: left alone",
                link.kind.as_deref().unwrap_or("link without a kind")
            ),
            forget,
            ..Plan::default()
        };
    }
    let ours: Vec<&IpNet> = nets.iter().filter(|n| link.addresses.contains(n)).collect();
    let others = foreign(link, nets);
    let mut plan = Plan {
        forget,
        ..Plan::default()
    };
    if created && others.is_empty() {
        plan.state = format!("{name} created by nodeprep");
        plan.actions.push(Action::Link(LinkOp::Delete {
            name: name.to_string(),
        }));
        return plan;
    }
    plan.actions.extend(ours.iter().map(|net| {
        Action::Link(LinkOp::DelAddress {
            name: name.to_string(),
            net: **net,
        })
    }));
    plan.state = if ours.is_empty() {
        format!("{name} holds no address of nodeprep's")
    } else {
        format!("{name} holds {}", join(&ours))
    };
    plan.notes.push(if !created {
        format!("{name} was not created by nodeprep (per its record): the link stays")
    } else {
        format!("{name} also holds {}: the link stays", join(&others))
    });
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<IpNet> {
        vec!["169.254.1.1/32".parse().unwrap()]
    }

    fn state(kind: Option<&str>, up: bool, addrs: &[&str]) -> LinkState {
        LinkState {
            index: 7,
            kind: kind.map(str::to_string),
            up,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn names(p: &Plan) -> Vec<String> {
        p.actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn absent_link_is_created_with_its_address() {
        let p = present("dummy0", &nets(), None).unwrap();
        assert_eq!(
            names(&p),
            ["create dummy link dummy0", "add 169.254.1.1/32 to dummy0"]
        );
    }

    #[test]
    fn in_spec_link_needs_nothing_and_ignores_kernel_link_local() {
        let p = present(
            "dummy0",
            &nets(),
            Some(&state(
                Some("dummy"),
                true,
                &["169.254.1.1/32", "fe80::a8c1:abff:fe12:3456/64"],
            )),
        )
        .unwrap();
        assert!(p.is_empty());
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        assert_eq!(p.state, "dummy0 169.254.1.1/32 up");
    }

    #[test]
    fn down_and_missing_address_are_repaired() {
        let p = present("dummy0", &nets(), Some(&state(Some("dummy"), false, &[]))).unwrap();
        assert_eq!(names(&p), ["add 169.254.1.1/32 to dummy0", "set dummy0 up"]);
        assert_eq!(p.state, "dummy0 without 169.254.1.1/32 down");
    }

    #[test]
    fn other_addresses_are_reported_and_kept() {
        let p = present(
            "dummy0",
            &nets(),
            Some(&state(
                Some("dummy"),
                true,
                &["169.254.1.1/32", "10.99.0.1/32", "fd00::1/128"],
            )),
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(
            p.notes,
            vec!["also holds 10.99.0.1/32, fd00::1/128 (left alone)".to_string()]
        );
    }

    #[test]
    fn a_wider_prefix_of_the_same_address_is_not_the_address() {
        let p = present(
            "dummy0",
            &nets(),
            Some(&state(Some("dummy"), true, &["169.254.1.1/16"])),
        )
        .unwrap();
        assert_eq!(names(&p), ["add 169.254.1.1/32 to dummy0"]);
    }

    #[test]
    fn an_ipv6_address_is_diffed_in_its_own_family() {
        let both: Vec<IpNet> = vec![
            "169.254.1.1/32".parse().unwrap(),
            "fd00:1::1/128".parse().unwrap(),
        ];
        let p = present(
            "dummy0",
            &both,
            Some(&state(Some("dummy"), true, &["169.254.1.1/32"])),
        )
        .unwrap();
        assert_eq!(names(&p), ["add fd00:1::1/128 to dummy0"]);
    }

    #[test]
    fn wrong_kind_is_an_error_naming_it() {
        let e = present("dummy0", &nets(), Some(&state(Some("bridge"), true, &[]))).unwrap_err();
        assert!(e.to_string().contains("is a bridge, not dummy"), "{e}");
        let e = present("dummy0", &nets(), Some(&state(None, true, &[]))).unwrap_err();
        assert!(e.to_string().contains("no link kind"), "{e}");
    }

    #[test]
    fn remove_deletes_only_nodeprep_links_without_other_addresses() {
        let ours = state(Some("dummy"), true, &["169.254.1.1/32", "fe80::1/64"]);
        assert_eq!(
            names(&absent("dummy0", &nets(), Some(&ours), true)),
            ["delete link dummy0"]
        );
        // Someone else's dummy0: only the address goes.
        let p = absent("dummy0", &nets(), Some(&ours), false);
        assert_eq!(names(&p), ["remove 169.254.1.1/32 from dummy0"]);
        assert!(
            p.notes[0].contains("not created by nodeprep"),
            "{:?}",
            p.notes
        );
        // nodeprep's, but with a foreign address on it: the link stays.
        let shared = state(Some("dummy"), true, &["169.254.1.1/32", "10.99.0.1/32"]);
        let p = absent("dummy0", &nets(), Some(&shared), true);
        assert_eq!(names(&p), ["remove 169.254.1.1/32 from dummy0"]);
        assert!(
            p.notes[0].contains("also holds 10.99.0.1/32"),
            "{:?}",
            p.notes
        );
        // Another kind is never touched.
        let bridge = state(Some("bridge"), true, &["169.254.1.1/32"]);
        let p = absent("dummy0", &nets(), Some(&bridge), true);
        assert!(p.is_empty() && p.state.contains("bridge"), "{}", p.state);
        assert!(absent("dummy0", &nets(), None, true).is_empty());
    }
}
