//! The managed resources, in converge order: the link exists before dnsmasq
//! and consul need its address, and config files are in place before the
//! services that read them are restarted.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::ValueEnum;

use crate::config::Config;
use crate::plan::{Action, FileSpec, Plan};
use crate::sys::files;
use crate::sys::netlink::Netlink;
use crate::sys::systemd::Systemd;

pub mod consul_config;
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
}

impl ResourceId {
    pub const ALL: [ResourceId; 5] = [
        ResourceId::Link,
        ResourceId::Networkd,
        ResourceId::Dnsmasq,
        ResourceId::ConsulConfig,
        ResourceId::Environment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceId::Link => "link",
            ResourceId::Networkd => "networkd",
            ResourceId::Dnsmasq => "dnsmasq",
            ResourceId::ConsulConfig => "consul-config",
            ResourceId::Environment => "environment",
        }
    }
}

/// What every resource may consult: the configuration, where files live, and
/// handles to the live system (opened lazily: a run that needs no netlink
/// opens no socket).
pub struct Ctx {
    pub cfg: Config,
    /// `--root DIR`: offline mode.
    pub root: Option<PathBuf>,
    pub systemd: Option<Systemd>,
    /// Whether files must end up root-owned (true when running as root).
    pub as_root: bool,
    netlink: OnceCell<Netlink>,
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
            netlink: OnceCell::new(),
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

    pub fn file_spec(&self) -> FileSpec {
        FileSpec {
            mode: 0o644,
            uid: self.as_root.then_some(0),
        }
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
                execute(ctx, action)?;
                done.push(action.to_string());
            }
            Ok(done)
        }
    }
}

/// Carries out one file or service action.
pub fn execute(ctx: &Ctx, action: &Action) -> Result<()> {
    let systemd = || {
        ctx.systemd
            .ok_or_else(|| anyhow::anyhow!("cannot {action}: systemd is not running on this host"))
    };
    match action {
        Action::Write {
            path,
            content,
            mode,
            ..
        } => files::write_atomic(path, content, *mode),
        Action::Chmod { path, mode, .. } => files::set_mode(path, *mode),
        Action::EnableUnit { unit } => systemd()?.enable(unit),
        Action::ReloadNetworkd => systemd()?.reload_networkd(),
        Action::RestartUnit { unit } => systemd()?.restart(unit),
        Action::CreateLink { .. } | Action::AddAddress { .. } | Action::SetUp { .. } => {
            unreachable!("link actions are executed by resources::link")
        }
    }
}
