//! Planned side effects, typed by what carries them out: files, systemd
//! units, the kernel's links, containers. A resource's `diff` produces them;
//! the executor ([`super::execute`]) runs them. Their `Display` is what
//! reports list, the same text for a plan and for the apply that follows.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::state::Original;
use crate::sys::docker::ContainerSpec;

/// A managed path: as the host names it (what reports show, and the key of
/// the state record) and as this run reaches it (under `--root DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    pub host: PathBuf,
    pub real: PathBuf,
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.host.display().fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    File(FileOp),
    Unit(UnitOp),
    Link(LinkOp),
    Container(ContainerOp),
    Resolver(ResolverOp),
    Nm(NmOp),
}

/// NetworkManager's view of nodeprep's connection profile, through nmcli.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NmOp {
    /// Read the profile's keyfile (again): `nmcli connection load`.
    Load { path: HostPath, uuid: String },
    /// Forget the profile of a keyfile that is gone (the same nmcli verb).
    Unload { path: HostPath, uuid: String },
    /// Activate the profile on the link (re-activate it when active).
    Up { uuid: String, link: String },
    /// Deactivate it.
    Down { uuid: String, link: String },
    /// Read `conf.d` again (`nmcli general reload conf`).
    ReloadConf,
}

/// systemd-resolved's runtime DNS settings of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverOp {
    SetServers {
        link: String,
        servers: Vec<String>,
    },
    SetDomains {
        link: String,
        domains: Vec<String>,
    },
    SetDefaultRoute {
        link: String,
        on: bool,
    },
    /// Drop every setting made for the link through resolved's API.
    Revert {
        link: String,
    },
}

/// What to keep in the state directory before a file's current content goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the path is absent, or holds what nodeprep wrote.
    Nothing,
    /// The content predates nodeprep: kept as the original, put back by
    /// `remove`.
    Original,
    /// Someone changed a file nodeprep wrote: their version is kept under
    /// `edited/` (the original, if any, stays as it was).
    Edited,
}

/// The current content of a file about to be replaced or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Replace (or create) a file atomically, creating missing parent
    /// directories (0755; recorded so `remove` can take them away again).
    Write {
        path: HostPath,
        content: Vec<u8>,
        mode: u32,
        /// Owner to set (live mode, as root).
        owner: Option<(u32, u32)>,
        /// What is there now, `None` when absent (for diffs and keeping).
        old: Option<Current>,
        keep: Keep,
        why: &'static str,
        /// A secret the content holds: redacted from every diff.
        secret: Option<String>,
    },
    /// Only the permission bits differ.
    Chmod { path: HostPath, mode: u32, old: u32 },
    /// Delete a file nodeprep wrote.
    Remove {
        path: HostPath,
        old: Current,
        keep: Keep,
        secret: Option<String>,
    },
    /// Put back the original nodeprep kept before it first replaced the file.
    Restore {
        path: HostPath,
        /// The kept content, its mode and owner.
        original: Vec<u8>,
        how: Original,
        old: Option<Current>,
        keep: Keep,
        secret: Option<String>,
    },
    /// Create a directory, or fix its mode and owner.
    Dir {
        path: HostPath,
        mode: u32,
        owner: Option<(u32, u32)>,
        why: String,
    },
    /// Remove a directory nodeprep created, now empty.
    Rmdir { path: HostPath },
    /// Delete a directory and everything in it (`remove --purge-data`).
    Purge { path: HostPath },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitOp {
    /// Enable for the next boot (not started now); recorded, so `remove`
    /// disables only what nodeprep enabled.
    Enable(&'static str),
    /// Disable a unit that enabling another pulled in (`Also=`).
    KeepDisabled(&'static str),
    /// Disable a unit nodeprep enabled.
    Disable(&'static str),
    /// Start a unit that is not running; recorded, so `remove` stops only
    /// what nodeprep started.
    Start(&'static str),
    /// Stop a unit nodeprep started (it was not running before).
    Stop(&'static str),
    Restart(&'static str),
    /// Make a running systemd-networkd re-read its files.
    ReloadNetworkd,
    /// Restart a unit only if it is running (`systemctl try-restart`).
    TryRestart(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    CreateDummy { name: String },
    AddAddress { name: String, net: IpNet },
    DelAddress { name: String, net: IpNet },
    SetUp { name: String },
    Delete { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerOp {
    Pull {
        image: String,
    },
    Create {
        name: String,
        spec: Box<ContainerSpec>,
    },
    Start {
        name: String,
    },
    Restart {
        name: String,
        why: &'static str,
    },
    /// Remove (force: stops it first).
    Remove {
        name: String,
        why: &'static str,
    },
    /// Restart the engine's systemd unit so that it reads its changed
    /// configuration, and wait for it to answer again.
    RestartEngine {
        unit: &'static str,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::File(op) => op.fmt(f),
            Action::Unit(op) => op.fmt(f),
            Action::Link(op) => op.fmt(f),
            Action::Container(op) => op.fmt(f),
            Action::Resolver(op) => op.fmt(f),
            Action::Nm(op) => op.fmt(f),
        }
    }
}

impl fmt::Display for NmOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NmOp::Load { path, .. } => write!(f, "NetworkManager: load {path}"),
            NmOp::Unload { path, .. } => write!(f, "NetworkManager: forget the profile of {path}"),
            NmOp::Up { link, .. } => write!(f, "NetworkManager: activate {link}'s profile"),
            NmOp::Down { link, .. } => write!(f, "NetworkManager: deactivate {link}'s profile"),
            NmOp::ReloadConf => write!(f, "NetworkManager: reload its configuration"),
        }
    }
}

impl fmt::Display for FileOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = |keep: &Keep| match keep {
            Keep::Nothing => "",
            Keep::Original => ", original kept",
            Keep::Edited => ", edited copy kept",
        };
        match self {
            FileOp::Write {
                path, why, keep, ..
            } => write!(f, "write {path} ({why}{})", kept(keep)),
            FileOp::Chmod { path, mode, old } => write!(f, "chmod {mode:o} {path} (was {old:o})"),
            FileOp::Remove { path, keep, .. } => write!(f, "remove {path}{}", kept(keep)),
            FileOp::Restore { path, keep, .. } => {
                write!(f, "restore the original {path}{}", kept(keep))
            }
            FileOp::Dir { path, why, .. } => write!(f, "directory {path} ({why})"),
            FileOp::Rmdir { path } => write!(f, "remove directory {path} (created by nodeprep)"),
            FileOp::Purge { path } => write!(f, "delete {path} and everything in it"),
        }
    }
}

impl fmt::Display for ResolverOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverOp::SetServers { link, servers } => {
                write!(f, "resolved: DNS servers of {link}: {}", servers.join(" "))
            }
            ResolverOp::SetDomains { link, domains } => {
                write!(f, "resolved: route {} through {link}", domains.join(" "))
            }
            ResolverOp::SetDefaultRoute { link, on: true } => {
                write!(f, "resolved: send other names through {link}")
            }
            ResolverOp::SetDefaultRoute { link, on: false } => {
                write!(f, "resolved: keep other names off {link}")
            }
            ResolverOp::Revert { link } => write!(f, "resolved: drop the DNS settings of {link}"),
        }
    }
}

impl fmt::Display for UnitOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitOp::Enable(u) => write!(f, "enable {u}"),
            UnitOp::KeepDisabled(u) => write!(f, "keep {u} disabled"),
            UnitOp::Disable(u) => write!(f, "disable {u}"),
            UnitOp::Start(u) => write!(f, "start {u}"),
            UnitOp::Stop(u) => write!(f, "stop {u} (nodeprep started it)"),
            UnitOp::Restart(u) => write!(f, "restart {u}"),
            UnitOp::ReloadNetworkd => write!(f, "reload systemd-networkd"),
            UnitOp::TryRestart(u) => write!(f, "restart {u} if it runs"),
        }
    }
}

impl fmt::Display for LinkOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkOp::CreateDummy { name } => write!(f, "create dummy link {name}"),
            LinkOp::AddAddress { name, net } => write!(f, "add {net} to {name}"),
            LinkOp::DelAddress { name, net } => write!(f, "remove {net} from {name}"),
            LinkOp::SetUp { name } => write!(f, "set {name} up"),
            LinkOp::Delete { name } => write!(f, "delete link {name}"),
        }
    }
}

impl fmt::Display for ContainerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerOp::Pull { image } => write!(f, "pull {image}"),
            ContainerOp::Create { name, spec } => {
                write!(f, "create container {name} from {}", spec.image)
            }
            ContainerOp::Start { name } => write!(f, "start container {name}"),
            ContainerOp::Restart { name, why } => write!(f, "restart container {name} ({why})"),
            ContainerOp::Remove { name, why } => write!(f, "remove container {name} ({why})"),
            ContainerOp::RestartEngine { unit } => {
                write!(f, "restart {unit} (to read its changed configuration)")
            }
        }
    }
}

impl Action {
    /// The path a file action changes, if any.
    pub fn file_path(&self) -> Option<&HostPath> {
        match self {
            Action::File(
                FileOp::Write { path, .. }
                | FileOp::Chmod { path, .. }
                | FileOp::Remove { path, .. }
                | FileOp::Restore { path, .. }
                | FileOp::Dir { path, .. }
                | FileOp::Rmdir { path }
                | FileOp::Purge { path },
            ) => Some(path),
            _ => None,
        }
    }

    /// True when the action makes a path disappear (for planning which
    /// directories end up empty).
    pub fn deletes_path(&self) -> bool {
        matches!(
            self,
            Action::File(FileOp::Remove { .. } | FileOp::Rmdir { .. } | FileOp::Purge { .. })
        )
    }

    /// True when the action changes a file's content or mode.
    pub fn changes_file(&self) -> bool {
        matches!(
            self,
            Action::File(
                FileOp::Write { .. }
                    | FileOp::Chmod { .. }
                    | FileOp::Remove { .. }
                    | FileOp::Restore { .. }
            )
        )
    }
}

/// An address a URL or a report names: `ip` or `[ip]` (IPv6).
pub fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
