//! The managed resources, in converge order: the link exists before dnsmasq
//! and consul need its address, and config files are in place before the
//! containers that read them are started or restarted.

use std::cell::{OnceCell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::ValueEnum;

use crate::config::Config;
use crate::plan::{Action, FileSpec, Plan};
use crate::progress;
use crate::sys::docker::Docker;
use crate::sys::files;
use crate::sys::netlink::Netlink;
use crate::sys::systemd::Systemd;

pub mod consul_config;
pub mod containers;
pub mod dnsmasq;
pub mod environment;
pub mod link;
pub mod networkd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ResourceId {
    Link,
    Networkd,
    Dnsmasq,
    ConsulConfig,
    Environment,
    Consul,
    Registrator,
}

impl ResourceId {
    pub const ALL: [ResourceId; 7] = [
        ResourceId::Link,
        ResourceId::Networkd,
        ResourceId::Dnsmasq,
        ResourceId::ConsulConfig,
        ResourceId::Environment,
        ResourceId::Consul,
        ResourceId::Registrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceId::Link => "link",
            ResourceId::Networkd => "networkd",
            ResourceId::Dnsmasq => "dnsmasq",
            ResourceId::ConsulConfig => "consul-config",
            ResourceId::Environment => "environment",
            ResourceId::Consul => "consul",
            ResourceId::Registrator => "registrator",
        }
    }
}

/// What every resource may consult: the configuration, where files live, and
/// handles to the live system (opened lazily: a run that needs no netlink or
/// Docker opens no socket).
pub struct Ctx {
    pub cfg: Config,
    /// `--root DIR`: offline mode.
    pub root: Option<PathBuf>,
    pub systemd: Option<Systemd>,
    /// Whether files must end up root-owned (true when running as root).
    pub as_root: bool,
    /// How long to wait for dockerd: `apply` waits, `check` does not.
    pub docker_wait: Duration,
    netlink: OnceCell<Netlink>,
    /// One connection attempt per run, shared by both container resources:
    /// a dead dockerd is reported for each without waiting twice.
    docker: OnceCell<Result<Docker, String>>,
    /// Resources `apply` changed so far in this run (consul restarts when
    /// its config files changed).
    changed: RefCell<Vec<ResourceId>>,
}

impl Ctx {
    pub fn new(cfg: Config, root: Option<PathBuf>, as_root: bool) -> Ctx {
        // Under --root nothing on the live system is touched, services included.
        let systemd = if root.is_none() {
            Systemd::detect()
        } else {
            None
        };
        Ctx {
            cfg,
            root,
            systemd,
            as_root,
            docker_wait: Duration::ZERO,
            netlink: OnceCell::new(),
            docker: OnceCell::new(),
            changed: RefCell::new(Vec::new()),
        }
    }

    pub fn offline(&self) -> bool {
        self.root.is_some()
    }

    /// A managed path as seen by this run: re-based under `--root`.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }

    pub fn netlink(&self) -> Result<&Netlink> {
        if let Some(nl) = self.netlink.get() {
            return Ok(nl);
        }
        let nl = Netlink::connect()?;
        Ok(self.netlink.get_or_init(|| nl))
    }

    pub fn docker(&self) -> Result<&Docker> {
        self.docker
            .get_or_init(|| {
                Docker::connect(self.cfg.docker.socket.as_path(), self.docker_wait)
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Managed files: 0644, root-owned.
    pub fn file_spec(&self) -> FileSpec {
        FileSpec {
            mode: 0o644,
            owner: self.as_root.then_some((0, 0)),
            secret: None,
        }
    }

    pub fn mark_changed(&self, id: ResourceId) {
        self.changed.borrow_mut().push(id);
    }

    pub fn was_changed(&self, id: ResourceId) -> bool {
        self.changed.borrow().contains(&id)
    }
}

/// Observes the resource and diffs it against the configuration.
pub fn plan(ctx: &Ctx, id: ResourceId) -> Result<Plan> {
    match id {
        ResourceId::Link => link::plan(ctx),
        ResourceId::Networkd => networkd::plan(ctx),
        ResourceId::Dnsmasq => dnsmasq::plan(ctx),
        ResourceId::ConsulConfig => consul_config::plan(ctx),
        ResourceId::Environment => environment::plan(ctx),
        ResourceId::Consul => containers::plan_consul(ctx),
        ResourceId::Registrator => containers::plan_registrator(ctx),
    }
}

/// Executes a plan. Returns the actions that were carried out, for the report
/// (the link may do less than planned when the kernel got there first).
pub fn apply(ctx: &Ctx, id: ResourceId, plan: &Plan) -> Result<Vec<String>> {
    match id {
        ResourceId::Link => link::apply(ctx, plan),
        _ => {
            let mut done = Vec::new();
            for action in &plan.actions {
                execute(ctx, action).map_err(|e| {
                    if done.is_empty() {
                        e
                    } else {
                        e.context(format!("after {}", done.join(", ")))
                    }
                })?;
                done.push(action.to_string());
            }
            Ok(done)
        }
    }
}

/// Carries out one file, service or container action.
pub fn execute(ctx: &Ctx, action: &Action) -> Result<()> {
    let systemd = || {
        ctx.systemd
            .ok_or_else(|| anyhow!("cannot {action}: systemd is not running on this host"))
    };
    match action {
        Action::Write {
            path,
            content,
            mode,
            owner,
            ..
        } => files::write_atomic(path, content, *mode, *owner),
        Action::Dir {
            path, mode, owner, ..
        } => files::ensure_dir(path, *mode, *owner),
        Action::Chmod { path, mode, .. } => files::set_mode(path, *mode),
        Action::EnableUnit { unit } => systemd()?.enable(unit),
        Action::DisableUnit { unit } => systemd()?.disable(unit),
        Action::ReloadNetworkd => systemd()?.reload_networkd(),
        Action::RestartUnit { unit } => systemd()?.restart(unit),
        Action::PullImage { image } => {
            let mut display = progress::Pull::new(image);
            let result = ctx
                .docker()?
                .pull(image, &mut |event| display.event(&event));
            display.finish(result.is_ok());
            result
        }
        Action::RemoveContainer { name, .. } => ctx.docker()?.remove(name),
        Action::CreateContainer { name, spec } => ctx.docker()?.create(name, spec),
        Action::StartContainer { name } => ctx.docker()?.start(name),
        Action::RestartContainer { name, .. } => ctx.docker()?.restart(name),
        Action::CreateLink { .. } | Action::AddAddress { .. } | Action::SetUp { .. } => {
            unreachable!("link actions are executed by resources::link")
        }
    }
}
