//! `consul-config`: `interfaces.json` (client_addr and an always-explicit
//! bind_addr) and `agent.json` (role, datacenter, joins, gossip key) in the
//! agent's config dir; the operator's other files there are left alone.

use anyhow::{anyhow, Result};

use crate::config::{Config, Role};
use crate::engine::host::BindChoice;
use crate::engine::{Action, Ensure, FileOp, Host, HostPath, Plan, Resource, Want};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};

pub const INTERFACES_FILE: &str = "interfaces.json";
pub const AGENT_FILE: &str = "agent.json";

pub struct ConsulConfig;

pub struct Seen {
    /// The config dir and its mode and owner (`None`: missing).
    dir: (HostPath, Option<(u32, u32, u32)>),
    interfaces: FileSeen,
    agent: FileSeen,
    dirs: DirsSeen,
    /// The bind address, or why it cannot be chosen.
    bind: Result<BindChoice, String>,
    offline: bool,
}

impl Resource for ConsulConfig {
    const ID: &'static str = "consul-config";
    const DEPENDS_ON: &'static [&'static str] = &[];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let dir = host.cfg.consul.config_dir.as_path();
        let (interfaces, agent) = (dir.join(INTERFACES_FILE), dir.join(AGENT_FILE));
        let dir_path = host.path(dir);
        let dir_seen = match ensure {
            Ensure::Present => crate::sys::files::observe_dir(&dir_path.real)?,
            Ensure::Absent => None,
        };
        Ok(Seen {
            dir: (dir_path, dir_seen),
            interfaces: files::observe(host, &interfaces, ensure)?,
            agent: files::observe(host, &agent, ensure)?,
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[&interfaces, &agent])?,
                Ensure::Present => DirsSeen::default(),
            },
            bind: host
                .facts
                .bind_addr()
                .cloned()
                .map_err(|e| format!("{e:#}")),
            offline: host.offline(),
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let cfg = want.cfg;
        let (agent, secret) = render::consul_agent(cfg);
        let agent_spec = agent_spec(want, secret.clone());
        match want.ensure {
            Ensure::Present => {
                let bind = match &seen.bind {
                    Ok(b) => b,
                    // An offline tree is usually an image for other hosts:
                    // the building host's address would be wrong there.
                    Err(e) if seen.offline => return Ok(Plan::skipped(e.clone())),
                    Err(e) => return Err(anyhow!("{e}")),
                };
                let mut plan = Plan {
                    state: state(cfg, bind),
                    ..Plan::default()
                };
                plan.actions.extend(readable_dir(cfg, &seen.dir));
                plan.actions.extend(files::present(
                    &seen.interfaces,
                    render::consul_interfaces(cfg, bind.ip).into_bytes(),
                    FileSpec::plain(want),
                ));
                plan.actions
                    .extend(files::present(&seen.agent, agent.into_bytes(), agent_spec));
                Ok(plan)
            }
            Ensure::Absent => {
                let interfaces = seen
                    .bind
                    .as_ref()
                    .ok()
                    .map(|b| render::consul_interfaces(cfg, b.ip));
                let mut plan = Plan {
                    state: cfg.consul.config_dir.as_path().display().to_string(),
                    ..Plan::default()
                };
                for undo in [
                    files::absent(
                        &seen.interfaces,
                        interfaces.as_deref().map(str::as_bytes),
                        None,
                    ),
                    files::absent(&seen.agent, Some(agent.as_bytes()), secret),
                ] {
                    plan.actions.extend(undo.action);
                    plan.notes.extend(undo.note);
                    plan.forget.extend(undo.forget);
                }
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
                Ok(plan)
            }
        }
    }
}

/// The agent reads the config dir as the image's consul user
/// (`consul.uid`/`consul.gid`) through a bind mount: a dir whose mode or
/// owner keeps that user from listing it (0750 root:root, as a umask of 027
/// makes it) is drift, repaired by adding the read and search bits of the
/// class the user falls in.
fn readable_dir(
    cfg: &Config,
    (path, seen): &(HostPath, Option<(u32, u32, u32)>),
) -> Option<Action> {
    let (mode, uid, gid) = (*seen)?;
    let (cuid, cgid) = (cfg.consul.uid, cfg.consul.gid);
    let shift = if uid == cuid {
        6
    } else if gid == cgid {
        3
    } else {
        0
    };
    if (mode >> shift) & 0o5 == 0o5 {
        return None;
    }
    let fixed = mode | (0o5 << shift);
    Some(Action::File(FileOp::Dir {
        path: path.clone(),
        mode: fixed,
        owner: None,
        why: format!(
            "the consul user {cuid}:{cgid} cannot read it: mode {mode:o}, owner {uid}:{gid}; chmod {fixed:o}"
        ),
    }))
}

/// A file holding the gossip key is 0640, readable by the image's consul
/// group (the agent runs as it), and redacted from every diff.
fn agent_spec(want: &Want, secret: Option<String>) -> FileSpec {
    match secret {
        Some(secret) => FileSpec {
            mode: 0o640,
            owner: want.as_root.then_some((0, want.cfg.consul.gid)),
            secret: Some(secret),
        },
        None => FileSpec::plain(want),
    }
}

fn state(cfg: &Config, bind: &BindChoice) -> String {
    let cluster = &cfg.consul.cluster;
    format!(
        "bind_addr {} ({}), client_addr {}, {} in datacenter {}",
        bind.ip,
        bind.how,
        cfg.consul.client_addr,
        if cluster.role == Role::Server {
            "server"
        } else {
            "client"
        },
        cluster.datacenter.0
    )
}
