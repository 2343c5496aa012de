//! `networkd`: the .netdev/.network pair that recreates the link at boot, and
//! systemd-networkd enabled so that it reads them.

use anyhow::{bail, Result};

use crate::plan::{diff_file, Action, Plan};
use crate::render;
use crate::resources::Ctx;
use crate::sys::files;

const UNIT: &str = "systemd-networkd.service";
const WAIT_ONLINE: &str = "systemd-networkd-wait-online.service";

pub fn plan(ctx: &Ctx) -> Result<Plan> {
    let cfg = &ctx.cfg;
    let (netdev_name, network_name) = render::networkd_names(&cfg.link.name.0);
    let dir = cfg.networkd.dir.as_path();
    let mut plan = Plan::default();
    for (name, content) in [
        (netdev_name, render::netdev(cfg)),
        (network_name, render::network(cfg)),
    ] {
        let path = ctx.host_path(&dir.join(name));
        let observed = files::observe(&path)?;
        plan.actions.extend(diff_file(
            path,
            content.into_bytes(),
            ctx.file_spec(),
            observed.as_ref(),
        ));
    }
    let files_change = plan.writes_files();
    plan.state = format!("{}/10-{}.{{netdev,network}}", dir.display(), cfg.link.name);
    if ctx.offline() {
        plan.notes
            .push("systemd-networkd not managed under --root".into());
        return Ok(plan);
    }
    let Some(systemd) = ctx.systemd else {
        bail!("systemd is not running on this host: systemd-networkd cannot recreate {} after a reboot", cfg.link.name);
    };
    if !systemd.is_enabled(UNIT)? {
        plan.actions.push(Action::EnableUnit { unit: UNIT });
        // Enabling networkd also enables (Also=) its wait-online service. On
        // a host whose network networkd does not manage, the only networkd
        // link is dummy0 (RequiredForOnline=no), so wait-online finds nothing
        // to wait for, times out after 2 minutes, fails, and holds up every
        // unit ordered after network-online.target (cloud-init among them).
        // Keep it as it was: disabled.
        if !systemd.is_enabled(WAIT_ONLINE)? {
            plan.actions.push(Action::DisableUnit { unit: WAIT_ONLINE });
        }
    }
    // A running networkd only reads new or changed files on reload. Never
    // rely on it at apply time: the link resource has made the live state.
    if files_change && systemd.is_active(UNIT)? {
        plan.actions.push(Action::ReloadNetworkd);
    }
    Ok(plan)
}
