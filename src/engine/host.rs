//! The host a run works on: the configuration, where its paths live
//! (`--root`), the facts gathered about it, and nodeprep's record.
//!
//! Facts are gathered at most once per run and only when a resource or probe
//! asks (a run that needs no netlink or Docker opens no socket); every
//! resource and probe of the run sees the same answer.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::config::{BindAddr, Config, DockerSocket, EngineChoice, NetworkBackend};
use crate::engine::action::HostPath;
use crate::state::{self, Store};
use crate::sys::docker::{Candidates, Docker, EngineKind};
use crate::sys::netlink::Netlink;
use crate::sys::nm;
use crate::sys::systemd::Systemd;

/// The service that keeps the link across reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Networkd,
    NetworkManager,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Networkd => "networkd",
            Backend::NetworkManager => "networkmanager",
        }
    }
}

/// The network backend and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: Backend,
    pub how: String,
}

/// The container engine and how nodeprep knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChoiceMade {
    pub kind: EngineKind,
    /// "Podman 4.3.1 at /run/podman/podman.sock (auto)", or under --root
    /// how it was assumed.
    pub how: String,
}

const NM_UNIT: &str = "NetworkManager.service";

pub struct Host {
    pub cfg: Config,
    /// `--root DIR`: offline mode; files under DIR, nothing live touched.
    pub root: Option<PathBuf>,
    /// Whether files must end up root-owned (true when running as root).
    pub as_root: bool,
    pub facts: Facts,
    /// nodeprep's record, as read at the start of the run.
    pub store: Store,
    /// The directories of every managed path this run looked at (as this
    /// run reaches them): where a killed run may have left temporary files.
    dirs_seen: RefCell<BTreeSet<PathBuf>>,
}

/// The bind address and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindChoice {
    pub ip: IpAddr,
    pub how: String,
}

pub struct Facts {
    /// A running systemd; never consulted under `--root`.
    pub systemd: Option<Systemd>,
    offline: bool,
    /// The tree of an offline run.
    root: Option<PathBuf>,
    bind_addr: BindAddr,
    network_backend: NetworkBackend,
    engine: EngineChoice,
    docker_candidates: Candidates,
    /// How long to wait for dockerd: `apply` waits, `check` does not.
    docker_wait: Duration,
    netlink: OnceCell<Result<Netlink, String>>,
    resolved: OnceCell<Result<bool, String>>,
    bind: OnceCell<Result<BindChoice, String>>,
    docker: OnceCell<Result<Docker, String>>,
    network: OnceCell<Result<BackendChoice, String>>,
    nm: OnceCell<Result<nm::Daemon, String>>,
}

impl Host {
    pub fn new(cfg: Config, root: Option<PathBuf>, as_root: bool, docker_wait: Duration) -> Host {
        let offline = root.is_some();
        let facts = Facts {
            // Under --root nothing on the live system is touched, services
            // included.
            systemd: if offline { None } else { Systemd::detect() },
            offline,
            root: root.clone(),
            bind_addr: cfg.consul.bind_addr,
            network_backend: cfg.network.backend,
            engine: cfg.docker.engine,
            docker_candidates: Candidates::new(
                match &cfg.docker.socket {
                    DockerSocket::Auto => None,
                    DockerSocket::Path(p) => Some(p.as_path()),
                },
                engine_kind(cfg.docker.engine),
            ),
            docker_wait,
            netlink: OnceCell::new(),
            resolved: OnceCell::new(),
            bind: OnceCell::new(),
            docker: OnceCell::new(),
            network: OnceCell::new(),
            nm: OnceCell::new(),
        };
        let state_dir = rebase(root.as_deref(), cfg.state.dir.as_path());
        Host {
            cfg,
            root,
            as_root,
            facts,
            store: Store::load(state_dir),
            dirs_seen: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn offline(&self) -> bool {
        self.root.is_some()
    }

    /// A managed path as the host names it and as this run reaches it.
    pub fn path(&self, host: &Path) -> HostPath {
        let real = rebase(self.root.as_deref(), host);
        if let Some(dir) = real.parent() {
            self.dirs_seen.borrow_mut().insert(dir.to_path_buf());
        }
        HostPath {
            host: host.to_path_buf(),
            real,
        }
    }

    /// The directories of the managed paths this run has looked at so far.
    pub fn dirs_seen(&self) -> Vec<PathBuf> {
        self.dirs_seen.borrow().iter().cloned().collect()
    }

    /// Owner of managed files: root, when nodeprep runs as root (an
    /// unprivileged run under `--root` cannot give files away).
    pub fn root_owner(&self) -> Option<(u32, u32)> {
        self.as_root.then_some((0, 0))
    }
}

impl Facts {
    pub fn netlink(&self) -> Result<&Netlink> {
        self.netlink
            .get_or_init(|| Netlink::connect().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Whether systemd-resolved runs (never under `--root`).
    pub fn resolved_active(&self) -> Result<bool> {
        self.resolved
            .get_or_init(|| match self.systemd {
                Some(systemd) if !self.offline => systemd
                    .is_active("systemd-resolved.service")
                    .map_err(|e| format!("{e:#}")),
                _ => Ok(false),
            })
            .clone()
            .map_err(|e| anyhow!("{e}"))
    }

    /// `consul.bind_addr` resolved: as configured, or with `auto` the
    /// primary IPv4 address of the interface holding the default route.
    /// Under `--root` `auto` is an error: an offline tree is usually an image
    /// for other hosts, and the building host's address would be wrong on
    /// every one of them.
    pub fn bind_addr(&self) -> Result<&BindChoice> {
        self.bind
            .get_or_init(|| self.choose_bind_addr().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn choose_bind_addr(&self) -> Result<BindChoice> {
        match self.bind_addr {
            BindAddr::Addr(ip) => Ok(BindChoice {
                ip,
                how: "configured".into(),
            }),
            BindAddr::Auto if self.offline => bail!(
                "consul.bind_addr = \"auto\" is resolved on the live host; set an address to write this file under --root"
            ),
            BindAddr::Auto => {
                let Some(route) = self.netlink()?.default_route()? else {
                    bail!("no IPv4 default route, so consul.bind_addr = \"auto\" has nothing to choose: set consul.bind_addr to this host's address in the config");
                };
                let Some(ip) = route.address else {
                    bail!(
                        "the default route's interface {} has no IPv4 address: set consul.bind_addr in the config",
                        route.ifname
                    );
                };
                Ok(BindChoice {
                    ip: IpAddr::V4(ip),
                    how: format!("auto: default route via {}", route.ifname),
                })
            }
        }
    }

    /// One connection attempt per run, shared by every container resource
    /// and probe: a dead engine is reported for each without waiting twice.
    pub fn docker(&self) -> Result<&Docker> {
        self.docker
            .get_or_init(|| {
                Docker::connect(&self.docker_candidates, self.docker_wait)
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Docker or Podman: the engine that answers (live), or the configured
    /// one when `docker.engine` names it and none answers (and under
    /// --root, where `auto` means Docker).
    pub fn engine(&self) -> Result<EngineChoiceMade> {
        let configured = engine_kind(self.engine);
        if !self.offline {
            match (self.docker(), configured) {
                (Ok(docker), _) => {
                    return Ok(EngineChoiceMade {
                        kind: docker.engine().kind,
                        how: docker.describe(),
                    })
                }
                (Err(e), None) => return Err(e),
                (Err(_), Some(_)) => {}
            }
        }
        Ok(match configured {
            Some(kind) => EngineChoiceMade {
                kind,
                how: format!("{} (configured)", kind.name()),
            },
            None => EngineChoiceMade {
                kind: EngineKind::Docker,
                how:
                    "Docker assumed under --root: set docker.engine = \"podman\" for a Podman host"
                        .into(),
            },
        })
    }

    /// The network backend: as configured, or with `auto` NetworkManager
    /// when `NetworkManager.service` is active (under --root: enabled in the
    /// tree), else systemd-networkd.
    pub fn network_backend(&self) -> Result<&BackendChoice> {
        self.network
            .get_or_init(|| self.choose_backend().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn choose_backend(&self) -> Result<BackendChoice> {
        let chosen = |backend, how: &str| BackendChoice {
            backend,
            how: how.to_string(),
        };
        Ok(match self.network_backend {
            NetworkBackend::Networkd => chosen(Backend::Networkd, "configured"),
            NetworkBackend::NetworkManager => chosen(Backend::NetworkManager, "configured"),
            NetworkBackend::Auto => match (&self.root, self.systemd) {
                (Some(root), _) => {
                    let wants = root
                        .join("etc/systemd/system/multi-user.target.wants")
                        .join(NM_UNIT);
                    if wants.exists() {
                        chosen(
                            Backend::NetworkManager,
                            "auto: NetworkManager.service is enabled in the tree",
                        )
                    } else {
                        chosen(
                            Backend::Networkd,
                            "auto: NetworkManager.service is not enabled in the tree",
                        )
                    }
                }
                (None, Some(systemd)) if systemd.is_active(NM_UNIT)? => chosen(
                    Backend::NetworkManager,
                    "auto: NetworkManager.service is active",
                ),
                (None, Some(_)) => chosen(
                    Backend::Networkd,
                    "auto: NetworkManager.service is not active",
                ),
                (None, None) => chosen(Backend::Networkd, "auto: systemd is not running"),
            },
        })
    }

    /// NetworkManager's daemon, as nmcli sees it (never under --root).
    pub fn nm(&self) -> Result<&nm::Daemon> {
        self.nm
            .get_or_init(|| {
                if self.offline {
                    Ok(nm::Daemon::NotRunning("not consulted under --root".into()))
                } else {
                    nm::daemon().map_err(|e| format!("{e:#}"))
                }
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }
}

fn engine_kind(choice: EngineChoice) -> Option<EngineKind> {
    match choice {
        EngineChoice::Auto => None,
        EngineChoice::Docker => Some(EngineKind::Docker),
        EngineChoice::Podman => Some(EngineKind::Podman),
    }
}

fn rebase(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(state::relative(path)),
        None => path.to_path_buf(),
    }
}
