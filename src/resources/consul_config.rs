//! `consul-config`: `interfaces.json` in the agent's config dir, with
//! client_addr and an always-explicit bind_addr.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

use crate::config::BindAddr;
use crate::plan::{diff_file, Plan};
use crate::render;
use crate::resources::Ctx;
use crate::sys::files;

pub const INTERFACES_FILE: &str = "interfaces.json";

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
    let path = ctx.host_path(&ctx.cfg.consul.config_dir.as_path().join(INTERFACES_FILE));
    let observed = files::observe(&path)?;
    let content = render::consul_interfaces(&ctx.cfg, bind_addr);
    Ok(Plan {
        actions: diff_file(
            path,
            content.into_bytes(),
            ctx.file_spec(),
            observed.as_ref(),
        )
        .into_iter()
        .collect(),
        state: format!(
            "bind_addr {bind_addr} ({how}), client_addr {}",
            ctx.cfg.consul.client_addr
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
