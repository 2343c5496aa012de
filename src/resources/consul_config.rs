//! `consul-config`: `interfaces.json` in the agent's config dir, with
//! client_addr and an always-explicit bind_addr.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

use crate::config::{BindAddr, Role};
use crate::plan::{diff_file, FileSpec, Plan};
use crate::render;
use crate::resources::Ctx;
use crate::sys::files;

pub const INTERFACES_FILE: &str = "interfaces.json";
/// Cluster settings (role, datacenter, joins, gossip key), beside
/// interfaces.json; the operator's other files in the dir are left alone.
pub const AGENT_FILE: &str = "agent.json";

pub fn plan(ctx: &Ctx) -> Result<Plan> {
    let (bind_addr, how) = match ctx.cfg.consul.bind_addr {
        BindAddr::Addr(ip) => (ip, "configured".to_string()),
        // An offline tree is usually an image for other hosts: the building
        // host's address would be wrong on every one of them.
        BindAddr::Auto if ctx.offline() => {
            return Ok(Plan::skipped(
                "consul.bind_addr = \"auto\" is resolved on the live host; set an address to write this file under --root",
            ))
        }
        BindAddr::Auto => {
            let (ip, ifname) = auto_bind_addr(ctx)?;
            (ip, format!("auto: default route via {ifname}"))
        }
    };
    let dir = ctx.cfg.consul.config_dir.as_path();
    let (agent, secret) = render::consul_agent(&ctx.cfg);
    // A file holding the gossip key is 0640, readable by the image's consul
    // group (the agent runs as it), and redacted from every diff.
    let agent_spec = match secret {
        Some(secret) => FileSpec {
            mode: 0o640,
            owner: ctx.as_root.then_some((0, ctx.cfg.consul.gid)),
            secret: Some(secret),
        },
        None => ctx.file_spec(),
    };
    let files = [
        (
            INTERFACES_FILE,
            render::consul_interfaces(&ctx.cfg, bind_addr),
            ctx.file_spec(),
        ),
        (AGENT_FILE, agent, agent_spec),
    ];
    let mut actions = Vec::new();
    for (name, content, spec) in files {
        let path = ctx.host_path(&dir.join(name));
        let observed = files::observe(&path)?;
        actions.extend(diff_file(
            path,
            content.into_bytes(),
            spec,
            observed.as_ref(),
        ));
    }
    let cluster = &ctx.cfg.consul.cluster;
    Ok(Plan {
        actions,
        state: format!(
            "bind_addr {bind_addr} ({how}), client_addr {}, {} in datacenter {}",
            ctx.cfg.consul.client_addr,
            if cluster.role == Role::Server {
                "server"
            } else {
                "client"
            },
            cluster.datacenter.0
        ),
        ..Plan::default()
    })
}

/// The primary IPv4 address of the interface holding the default route.
pub fn auto_bind_addr(ctx: &Ctx) -> Result<(Ipv4Addr, String)> {
    let Some(route) = ctx.netlink()?.default_route()? else {
        bail!("no IPv4 default route, so consul.bind_addr = \"auto\" has nothing to choose: set consul.bind_addr to this host's address in the config");
    };
    let Some(ip) = route.address else {
        bail!(
            "the default route's interface {} has no IPv4 address: set consul.bind_addr in the config",
            route.ifname
        );
    };
    Ok((ip, route.ifname))
}
