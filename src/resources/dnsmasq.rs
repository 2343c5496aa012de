//! `dnsmasq`: the drop-in that forwards the consul domain to the agent, and a
//! restart of a running dnsmasq when the file changed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::ResolvFile;
use crate::plan::{diff_file, Action, Plan};
use crate::render;
use crate::resources::Ctx;
use crate::sys::files;

const UNIT: &str = "dnsmasq.service";
/// systemd-resolved's list of the real upstream servers (not its stub).
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

pub fn plan(ctx: &Ctx) -> Result<Plan> {
    if !ctx.offline() && !dnsmasq_installed() {
        bail!("dnsmasq is not installed (no dnsmasq in /usr/sbin or PATH): install it (apt-get install dnsmasq), then run nodeprep apply again");
    }
    let resolv = resolv_file(ctx);
    let path = ctx.host_path(ctx.cfg.dnsmasq.file.as_path());
    let observed = files::observe(&path)?;
    let content = render::dnsmasq(&ctx.cfg, resolv.as_deref());
    let mut plan = Plan {
        actions: diff_file(
            path.clone(),
            content.into_bytes(),
            ctx.file_spec(),
            observed.as_ref(),
        )
        .into_iter()
        .collect(),
        state: format!("{}", ctx.cfg.dnsmasq.file.as_path().display()),
        ..Plan::default()
    };
    if let Some(r) = &resolv {
        plan.notes.push(format!("upstreams from {}", r.display()));
    }
    if plan.writes_files() && !ctx.offline() {
        match ctx.systemd {
            // dnsmasq reads its configuration only at start; SIGHUP rereads
            // hosts files, not server= lines.
            Some(systemd) if systemd.is_active(UNIT)? => {
                plan.actions.push(Action::RestartUnit { unit: UNIT })
            }
            Some(_) => plan
                .notes
                .push("dnsmasq is not running; it reads the file when it starts".into()),
            None => plan
                .notes
                .push("systemd is not running: restart dnsmasq yourself".into()),
        }
    }
    Ok(plan)
}

/// The upstream list dnsmasq should read. With `auto`, resolved's real list
/// when resolved is in use: Debian's dnsmasq otherwise looks for
/// /run/dnsmasq/resolv.conf, which resolvconf would write but which is missing
/// on resolved hosts, leaving dnsmasq without upstreams.
fn resolv_file(ctx: &Ctx) -> Option<PathBuf> {
    match &ctx.cfg.dnsmasq.resolv_file {
        ResolvFile::None => None,
        ResolvFile::Path(p) => Some(p.clone()),
        ResolvFile::Auto => {
            let p = Path::new(RESOLVED_UPSTREAMS);
            ctx.host_path(p).exists().then(|| p.to_path_buf())
        }
    }
}

fn dnsmasq_installed() -> bool {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("dnsmasq").is_file()))
        .unwrap_or(false);
    in_path || Path::new("/usr/sbin/dnsmasq").is_file()
}
