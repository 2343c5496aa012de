//! `link`: the dummy link with its /32, administratively up.
//!
//! This makes the live state now; the networkd files make it survive reboots.
//! nodeprep never deletes a link: one of another kind under the configured
//! name is an error that names the kind.

use anyhow::{bail, Result};
use ipnet::Ipv4Net;

use crate::plan::{Action, Plan};
use crate::resources::Ctx;
use crate::sys::netlink::{Created, LinkState};

pub fn plan(ctx: &Ctx) -> Result<Plan> {
    if ctx.offline() {
        return Ok(Plan::skipped("live link not managed under --root"));
    }
    let name = &ctx.cfg.link.name.0;
    let observed = ctx.netlink()?.link(name)?;
    diff(name, ctx.cfg.link.address.0, observed.as_ref())
}

/// Pure: the actions that turn `observed` into a dummy link `name` holding
/// `net`, up. Addresses other than `net` are reported, never removed: they may
/// belong to someone else.
pub fn diff(name: &str, net: Ipv4Net, observed: Option<&LinkState>) -> Result<Plan> {
    let Some(link) = observed else {
        return Ok(Plan {
            actions: vec![
                Action::CreateLink {
                    name: name.to_string(),
                },
                Action::AddAddress {
                    name: name.to_string(),
                    net,
                },
            ],
            state: format!("{name} absent"),
            ..Plan::default()
        });
    };
    match link.kind.as_deref() {
        Some("dummy") => {}
        Some(kind) => bail!(
            "link {name} exists but is a {kind}, not dummy: nodeprep never deletes a link it did not \
             create; remove it yourself (ip link del {name}) or choose another link.name"
        ),
        None => bail!(
            "link {name} exists but has no link kind (a physical or loopback device?), not dummy: \
             choose another link.name"
        ),
    }
    let mut plan = Plan {
        state: format!(
            "{name} {} {}",
            if link.addresses.contains(&net) {
                net.to_string()
            } else {
                format!("without {net}")
            },
            if link.up { "up" } else { "down" }
        ),
        ..Plan::default()
    };
    if !link.addresses.contains(&net) {
        plan.actions.push(Action::AddAddress {
            name: name.to_string(),
            net,
        });
    }
    if !link.up {
        plan.actions.push(Action::SetUp {
            name: name.to_string(),
        });
    }
    let others: Vec<String> = link
        .addresses
        .iter()
        .filter(|a| **a != net)
        .map(|a| a.to_string())
        .collect();
    if !others.is_empty() {
        plan.notes
            .push(format!("also holds {} (left alone)", others.join(", ")));
    }
    Ok(plan)
}

pub fn apply(ctx: &Ctx, plan: &Plan) -> Result<Vec<String>> {
    let nl = ctx.netlink()?;
    let name = &ctx.cfg.link.name.0;
    let net = ctx.cfg.link.address.0;
    let mut done = Vec::new();
    let mut actions = plan.actions.clone();
    if actions.first() == Some(&Action::CreateLink { name: name.clone() }) {
        actions.remove(0);
        match nl.create_dummy(name)? {
            Created::New => done.push(format!("created dummy link {name}")),
            Created::AlreadyExisted => {
                // The dummy module (or networkd) created it between our read
                // and our create: plan again from what is there now, which
                // also verifies its kind.
                let again = diff(name, net, nl.link(name)?.as_ref())?;
                if again
                    .actions
                    .contains(&Action::CreateLink { name: name.clone() })
                {
                    bail!("link {name}: the kernel reported EEXIST but no such link can be read");
                }
                done.push(format!(
                    "{name} appeared meanwhile (EEXIST); verified it is a dummy link"
                ));
                actions = again.actions;
            }
        }
    }
    let index = || -> Result<u32> {
        match nl.link(name)? {
            Some(l) => Ok(l.index),
            None => bail!("link {name} disappeared while nodeprep was configuring it"),
        }
    };
    for action in &actions {
        match action {
            Action::AddAddress { net, .. } => nl.add_address(name, index()?, *net)?,
            Action::SetUp { .. } => nl.set_up(name, index()?)?,
            other => unreachable!("not a link action: {other}"),
        }
        done.push(action.to_string());
    }
    // Verify: what the kernel reports now must need no further action.
    let after = diff(name, net, nl.link(name)?.as_ref())?;
    if !after.is_empty() {
        let left: Vec<String> = after.actions.iter().map(|a| a.to_string()).collect();
        bail!(
            "link {name} is still out of spec after apply: {}",
            left.join(", ")
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Ipv4Net {
        "169.254.1.1/32".parse().unwrap()
    }

    fn state(kind: Option<&str>, up: bool, addrs: &[&str]) -> LinkState {
        LinkState {
            index: 7,
            kind: kind.map(str::to_string),
            up,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn absent_link_is_created_with_its_address() {
        let p = diff("dummy0", net(), None).unwrap();
        assert_eq!(
            p.actions,
            vec![
                Action::CreateLink {
                    name: "dummy0".into()
                },
                Action::AddAddress {
                    name: "dummy0".into(),
                    net: net()
                }
            ]
        );
    }

    #[test]
    fn in_spec_link_needs_nothing() {
        let p = diff(
            "dummy0",
            net(),
            Some(&state(Some("dummy"), true, &["169.254.1.1/32"])),
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(p.state, "dummy0 169.254.1.1/32 up");
    }

    #[test]
    fn down_and_missing_address_are_repaired() {
        let p = diff("dummy0", net(), Some(&state(Some("dummy"), false, &[]))).unwrap();
        assert_eq!(
            p.actions,
            vec![
                Action::AddAddress {
                    name: "dummy0".into(),
                    net: net()
                },
                Action::SetUp {
                    name: "dummy0".into()
                }
            ]
        );
    }

    #[test]
    fn other_addresses_are_reported_and_kept() {
        let p = diff(
            "dummy0",
            net(),
            Some(&state(
                Some("dummy"),
                true,
                &["169.254.1.1/32", "10.99.0.1/32"],
            )),
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(
            p.notes,
            vec!["also holds 10.99.0.1/32 (left alone)".to_string()]
        );
    }

    #[test]
    fn a_wider_prefix_of_the_same_address_is_not_the_address() {
        let p = diff(
            "dummy0",
            net(),
            Some(&state(Some("dummy"), true, &["169.254.1.1/16"])),
        )
        .unwrap();
        assert_eq!(
            p.actions,
            vec![Action::AddAddress {
                name: "dummy0".into(),
                net: net()
            }]
        );
    }

    #[test]
    fn wrong_kind_is_an_error_naming_it() {
        let e = diff("dummy0", net(), Some(&state(Some("bridge"), true, &[]))).unwrap_err();
        assert!(e.to_string().contains("is a bridge, not dummy"), "{e}");
        let e = diff("dummy0", net(), Some(&state(None, true, &[]))).unwrap_err();
        assert!(e.to_string().contains("no link kind"), "{e}");
    }
}
