//! `network`: the link comes back after every reboot, with its address and
//! the DNS routing of the consul domain, through the service that manages
//! the host's network (`network.backend`). One network model, two writers:
//!
//! - `networkd`: the `.netdev`/`.network` pair, and systemd-networkd
//!   enabled so that it reads them; a running networkd is reloaded when they
//!   change. On a host that also has NetworkManager installed, a `conf.d`
//!   snippet of nodeprep's own (`keyfile.unmanaged-devices+=`) keeps
//!   NetworkManager off the link.
//! - `networkmanager`: a keyfile connection profile (`type=dummy`,
//!   `ipv4.method=manual`, the same DNS settings), loaded and activated
//!   through nmcli; drift is a changed or missing keyfile, a profile
//!   NetworkManager has not loaded from it, or a profile that is not active
//!   on the link.
//!
//! Whichever backend is chosen, what nodeprep wrote for the other one is
//! undone (a host whose backend changed converges to the new one); `remove`
//! undoes both. Until NetworkManager 1.58.1 a DNS server's port does not
//! reach systemd-resolved, so `dns.backend = "resolved"` (the agent's DNS
//! port on the link) is refused with the networkmanager backend on older
//! versions.
//!
//! The link itself (now) is the `link` resource's: this one only makes it
//! survive reboots.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{Config, DnsBackend};
use crate::engine::{
    Action, Backend, BackendChoice, Ensure, FileOp, Forget, Host, NmOp, Plan, Resource, UnitOp,
    Want,
};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};
use crate::sys::nm::{self, Version};

const UNIT: &str = "systemd-networkd.service";
const WAIT_ONLINE: &str = "systemd-networkd-wait-online.service";
/// The first NetworkManager that passes a DNS server's port on to
/// systemd-resolved (NetworkManager commit 40167df6, "dns/resolved: send
/// the server port number"); 1.52 to 1.58.0 parse `dns+udp://ADDR:PORT` but
/// send port 53.
const NM_DNS_PORT: Version = Version(1, 58, 1);

pub struct Network;

pub struct Seen {
    backend: Result<BackendChoice, String>,
    networkd: NetworkdSeen,
    nm: NmSeen,
    dirs: DirsSeen,
}

struct NetworkdSeen {
    netdev: FileSeen,
    network: FileSeen,
    /// `None` under `--root` (units are not managed there).
    units: Option<Units>,
}

struct Units {
    /// `None` when systemd is not running.
    state: Option<UnitState>,
    /// The record says nodeprep enabled networkd.
    enabled_by_nodeprep: bool,
}

struct UnitState {
    enabled: bool,
    wait_online_enabled: bool,
    active: bool,
}

struct NmSeen {
    keyfile: FileSeen,
    unmanaged: FileSeen,
    /// NetworkManager is installed: its `conf.d` directory exists.
    installed: bool,
    /// `None` under `--root`, or when nothing of NetworkManager's is in
    /// question (not installed, no keyfile, another backend).
    live: Option<NmLive>,
}

struct NmLive {
    daemon: nm::Daemon,
    /// nodeprep's profile as NetworkManager has it (by UUID).
    profile: Option<nm::Profile>,
    /// Whether NetworkManager's merged configuration leaves the link
    /// unmanaged (asked for the networkd backend only).
    unmanaged_effective: Option<bool>,
}

impl Resource for Network {
    const ID: &'static str = "network";
    const DEPENDS_ON: &'static [&'static str] = &["link"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let cfg = &host.cfg;
        let backend = host
            .facts
            .network_backend()
            .cloned()
            .map_err(|e| format!("{e:#}"));
        let (netdev, network) = networkd_paths(cfg);
        let (keyfile, unmanaged) = nm_paths(cfg);
        let units = if host.offline() {
            None
        } else {
            let state = match host.facts.systemd {
                Some(systemd) => Some(UnitState {
                    enabled: systemd.is_enabled(UNIT)?,
                    wait_online_enabled: systemd.is_enabled(WAIT_ONLINE)?,
                    active: systemd.is_active(UNIT)?,
                }),
                None => None,
            };
            Some(Units {
                state,
                enabled_by_nodeprep: host.store.record.enabled_units.contains(UNIT),
            })
        };
        let keyfile = files::observe(host, &keyfile, ensure)?;
        let unmanaged = files::observe(host, &unmanaged, ensure)?;
        // Resolved inside the root, like every managed path.
        let installed =
            crate::sys::files::is_dir(&host.path(cfg.networkmanager.conf_dir.as_path()).real);
        let chosen = backend.as_ref().ok().map(|b| b.backend);
        let in_question = chosen == Some(Backend::NetworkManager)
            || installed
            || keyfile.current.is_some()
            || keyfile.entry.is_some();
        let live = if host.offline() || !in_question {
            None
        } else {
            let daemon = host.facts.nm()?.clone();
            let profile = match &daemon {
                nm::Daemon::Running(_) => {
                    let uuid = render::nm_uuid(&cfg.link.name.0);
                    nm::profiles()?.into_iter().find(|p| p.uuid == uuid)
                }
                _ => None,
            };
            let unmanaged_effective =
                if ensure == Ensure::Present && chosen == Some(Backend::Networkd) && installed {
                    nm::unmanaged_devices()
                        .ok()
                        .map(|list| list.contains(&unmanaged_spec(cfg)))
                } else {
                    None
                };
            Some(NmLive {
                daemon,
                profile,
                unmanaged_effective,
            })
        };
        let dirs = match ensure {
            Ensure::Absent => files::observe_dirs(
                host,
                &[
                    &netdev,
                    &network,
                    &keyfile.path.host.clone(),
                    &unmanaged.path.host.clone(),
                ],
            )?,
            Ensure::Present => DirsSeen::default(),
        };
        Ok(Seen {
            backend,
            networkd: NetworkdSeen {
                netdev: files::observe(host, &netdev, ensure)?,
                network: files::observe(host, &network, ensure)?,
                units,
            },
            nm: NmSeen {
                keyfile,
                unmanaged,
                installed,
                live,
            },
            dirs,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let cfg = want.cfg;
        let mut plan = Plan::default();
        match want.ensure {
            Ensure::Present => {
                let choice = seen.backend.clone().map_err(|e| anyhow::anyhow!("{e}"))?;
                match choice.backend {
                    Backend::Networkd => {
                        plan.state = format!(
                            "networkd ({}): {}/10-{}.{{netdev,network}}",
                            choice.how,
                            cfg.networkd.dir.as_path().display(),
                            cfg.link.name
                        );
                        nm_undo(want, &seen.nm, &mut plan, true);
                        unmanaged_snippet(want, &seen.nm, &mut plan);
                        networkd(want, &seen.networkd, Ensure::Present, &mut plan)?;
                    }
                    Backend::NetworkManager => {
                        plan.state =
                            format!("networkmanager ({}): {}", choice.how, seen.nm.keyfile.path);
                        networkd(want, &seen.networkd, Ensure::Absent, &mut plan)?;
                        let before = plan.actions.len();
                        undo_file(&seen.nm.unmanaged, &render::nm_unmanaged(cfg), &mut plan);
                        if changes_files_since(&plan, before) && running(&seen.nm).is_some() {
                            plan.actions.push(Action::Nm(NmOp::ReloadConf));
                        }
                        nm_present(want, &seen.nm, &mut plan)?;
                    }
                }
            }
            Ensure::Absent => {
                plan.state = format!(
                    "{}/10-{}.{{netdev,network}}, {}",
                    cfg.networkd.dir.as_path().display(),
                    cfg.link.name,
                    seen.nm.keyfile.path
                );
                nm_undo(want, &seen.nm, &mut plan, false);
                let before = plan.actions.len();
                undo_file(&seen.nm.unmanaged, &render::nm_unmanaged(cfg), &mut plan);
                if changes_files_since(&plan, before) && running(&seen.nm).is_some() {
                    plan.actions.push(Action::Nm(NmOp::ReloadConf));
                }
                networkd(want, &seen.networkd, Ensure::Absent, &mut plan)?;
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
            }
        }
        Ok(plan)
    }
}

/// The `.netdev`/`.network` pair and systemd-networkd: `Present` for the
/// networkd backend, `Absent` for the other backend and for `remove`
/// (nodeprep's files go, networkd is disabled only if nodeprep enabled it).
fn networkd(want: &Want, seen: &NetworkdSeen, ensure: Ensure, plan: &mut Plan) -> Result<()> {
    let cfg = want.cfg;
    let contents = [render::netdev(cfg), render::network(cfg)];
    let pairs = [(&seen.netdev, &contents[0]), (&seen.network, &contents[1])];
    let files_before = plan.actions.len();
    match ensure {
        Ensure::Present => {
            for (seen, content) in pairs {
                plan.actions.extend(files::present(
                    seen,
                    content.clone().into_bytes(),
                    FileSpec::plain(want),
                ));
            }
        }
        Ensure::Absent => {
            for (seen, content) in pairs {
                undo_file(seen, content, plan);
            }
        }
    }
    let files_change = changes_files_since(plan, files_before);
    let Some(units) = &seen.units else {
        if ensure == Ensure::Present {
            plan.notes
                .push("systemd-networkd not managed under --root".into());
        }
        return Ok(());
    };
    let Some(state) = &units.state else {
        if ensure == Ensure::Absent {
            if units.enabled_by_nodeprep || files_change {
                plan.notes
                    .push("systemd is not running: systemd-networkd left as it is".into());
            }
            return Ok(());
        }
        bail!(
            "systemd is not running on this host: systemd-networkd cannot recreate {} after a reboot",
            cfg.link.name
        );
    };
    match ensure {
        Ensure::Present if !state.enabled => {
            plan.actions.push(Action::Unit(UnitOp::Enable(UNIT)));
            // Enabling networkd also enables (Also=) its wait-online
            // service. On a host whose network networkd does not manage,
            // the only networkd link is dummy0 (RequiredForOnline=no), so
            // wait-online finds nothing to wait for, times out after 2
            // minutes, fails, and holds up every unit ordered after
            // network-online.target (cloud-init among them). Keep it as
            // it was: disabled.
            if !state.wait_online_enabled {
                plan.actions
                    .push(Action::Unit(UnitOp::KeepDisabled(WAIT_ONLINE)));
            }
        }
        Ensure::Present => {}
        Ensure::Absent => {
            if want.ensure == Ensure::Absent {
                plan.forget.push(Forget::Unit(UNIT.into()));
            }
            if units.enabled_by_nodeprep && state.enabled {
                // `disable` follows Also= too: the socket and
                // wait-online go back to disabled with it.
                plan.actions.push(Action::Unit(UnitOp::Disable(UNIT)));
            } else if state.enabled && want.ensure == Ensure::Absent {
                plan.notes.push(format!(
                    "{UNIT} stays enabled: nodeprep did not enable it (per its record)"
                ));
            }
        }
    }
    // A running networkd only reads new, changed or removed files on
    // reload. Never rely on it at apply time: the link resource makes the
    // live state.
    if files_change && state.active {
        plan.actions.push(Action::Unit(UnitOp::ReloadNetworkd));
    }
    Ok(())
}

fn changes_files_since(plan: &Plan, before: usize) -> bool {
    plan.actions[before..].iter().any(Action::changes_file)
}

/// nodeprep's file at `seen` goes (or its original comes back); someone
/// else's stays.
fn undo_file(seen: &FileSeen, ours: &str, plan: &mut Plan) {
    let undo = files::absent(seen, Some(ours.as_bytes()), None);
    plan.actions.extend(undo.action);
    plan.notes.extend(undo.note);
    plan.forget.extend(undo.forget);
}

/// The NetworkManager daemon's version when it runs.
fn running(seen: &NmSeen) -> Option<Version> {
    match seen.live.as_ref().map(|l| &l.daemon) {
        Some(nm::Daemon::Running(v)) => Some(*v),
        _ => None,
    }
}

/// The networkmanager backend: the keyfile in place, NetworkManager has
/// loaded it and the profile is active on the link.
fn nm_present(want: &Want, seen: &NmSeen, plan: &mut Plan) -> Result<()> {
    let cfg = want.cfg;
    let link = cfg.link.name.0.clone();
    let uuid = render::nm_uuid(&link);
    let resolved_port = cfg.dns.backend == DnsBackend::Resolved;
    let live = match &seen.live {
        None => {
            plan.notes
                .push("NetworkManager not managed under --root".into());
            if resolved_port {
                plan.notes.push(format!(
                    "dns.backend = \"resolved\" needs NetworkManager {NM_DNS_PORT} or newer on the host"
                ));
            }
            None
        }
        Some(live) => match &live.daemon {
            nm::Daemon::Running(v) => {
                if resolved_port && *v < NM_DNS_PORT {
                    bail!(
                        "dns.backend = \"resolved\" routes the consul domain to {} through NetworkManager, which passes a DNS server's port on to systemd-resolved from version {NM_DNS_PORT} on; this host has NetworkManager {v} (it would send port 53, systemd-resolved's own listener on the link): use dns.backend = \"dnsmasq\" or network.backend = \"networkd\"",
                        render::link_dns_server(cfg)
                    );
                }
                Some(live)
            }
            nm::Daemon::Missing => bail!(
                "network.backend is networkmanager, but nmcli is not installed: install NetworkManager or use network.backend = \"networkd\""
            ),
            nm::Daemon::NotRunning(why) => bail!(
                "network.backend is networkmanager, but NetworkManager is not running ({why}): start it (systemctl enable --now NetworkManager) or use network.backend = \"networkd\""
            ),
        },
    };
    let spec = FileSpec {
        // NetworkManager ignores keyfiles others can read or write.
        mode: 0o600,
        owner: want.as_root.then_some((0, 0)),
        secret: None,
    };
    let write = files::present(&seen.keyfile, render::nm_keyfile(cfg).into_bytes(), spec);
    let changes = write.is_some();
    plan.actions.extend(write);
    let Some(live) = live else {
        return Ok(());
    };
    let path = &seen.keyfile.path;
    let loaded = live
        .profile
        .as_ref()
        .is_some_and(|p| p.filename.as_deref() == Some(path.host.as_path()));
    let active = live.profile.as_ref().is_some_and(|p| {
        p.device.as_deref() == Some(link.as_str()) && p.state.as_deref() == Some("activated")
    });
    let load = changes || !loaded;
    if load {
        plan.actions.push(Action::Nm(NmOp::Load {
            path: path.clone(),
            uuid: uuid.clone(),
        }));
    }
    if load || !active {
        plan.actions.push(Action::Nm(NmOp::Up { uuid, link }));
    }
    plan.state.push_str(match (&live.profile, active) {
        (_, true) => ", profile active",
        (Some(_), false) => ", profile not active",
        (None, false) => ", profile not loaded",
    });
    Ok(())
}

/// nodeprep's profile goes: deactivated, its keyfile removed (or the
/// original back), NetworkManager told. `switching`: the networkd backend
/// takes over in this run (then forgetting the profile deactivates it).
fn nm_undo(want: &Want, seen: &NmSeen, plan: &mut Plan, switching: bool) {
    let cfg = want.cfg;
    let link = cfg.link.name.0.clone();
    // The profile's UUID and keyfile are computed only when something needs
    // them: on a host without the profile (the networkd backend's usual
    // case) undoing it is a look at an absent file.
    let uuid = || render::nm_uuid(&link);
    let profile = seen.live.as_ref().and_then(|l| l.profile.as_ref());
    let ours_active = profile.is_some_and(|p| p.device.is_some());
    if ours_active && !switching {
        plan.actions.push(Action::Nm(NmOp::Down {
            uuid: uuid(),
            link: link.clone(),
        }));
    }
    let before = plan.actions.len();
    if seen.keyfile.current.is_some() || seen.keyfile.entry.is_some() {
        undo_file(&seen.keyfile, &render::nm_keyfile(cfg), plan);
    }
    let removes = plan.actions[before..].iter().any(|a| {
        matches!(
            a,
            Action::File(FileOp::Remove { .. }) | Action::File(FileOp::Restore { .. })
        )
    });
    let path = &seen.keyfile.path;
    let from_our_file = profile.is_some_and(|p| p.filename.as_deref() == Some(path.host.as_path()));
    if running(seen).is_none() {
        return;
    }
    if removes && from_our_file {
        plan.actions.push(Action::Nm(NmOp::Unload {
            path: path.clone(),
            uuid: uuid(),
        }));
        if switching && ours_active {
            plan.notes.push(format!(
                "NetworkManager deactivates {link}'s profile as it goes; if it takes {link} with it, the next apply recreates it"
            ));
        }
    } else if seen.keyfile.current.is_none() && from_our_file {
        // The file is gone already but NetworkManager still has its profile.
        plan.actions.push(Action::Nm(NmOp::Unload {
            path: path.clone(),
            uuid: uuid(),
        }));
    }
}

/// The networkd backend's snippet: present where NetworkManager is
/// installed, else (and once it is nodeprep's) gone.
fn unmanaged_snippet(want: &Want, seen: &NmSeen, plan: &mut Plan) {
    let cfg = want.cfg;
    let content = render::nm_unmanaged(cfg);
    let before = plan.actions.len();
    if seen.installed {
        plan.actions.extend(files::present(
            &seen.unmanaged,
            content.into_bytes(),
            FileSpec::plain(want),
        ));
        plan.state
            .push_str("; NetworkManager leaves the link alone");
    } else {
        undo_file(&seen.unmanaged, &content, plan);
    }
    let changes = changes_files_since(plan, before);
    if changes && running(seen).is_some() {
        plan.actions.push(Action::Nm(NmOp::ReloadConf));
    }
    let effective = seen.live.as_ref().and_then(|l| l.unmanaged_effective);
    if seen.installed && !changes && effective == Some(false) {
        plan.pending.push(format!(
            "NetworkManager's configuration does not leave {} unmanaged: a snippet read after {} sets keyfile.unmanaged-devices with \"=\" (NetworkManager --print-config shows the merged value)",
            cfg.link.name, seen.unmanaged.path
        ));
    }
}

fn unmanaged_spec(cfg: &Config) -> String {
    format!("interface-name:{}", cfg.link.name)
}

fn networkd_paths(cfg: &Config) -> (PathBuf, PathBuf) {
    let (netdev, network) = render::networkd_names(&cfg.link.name.0);
    let dir = cfg.networkd.dir.as_path();
    (dir.join(netdev), dir.join(network))
}

fn nm_paths(cfg: &Config) -> (PathBuf, PathBuf) {
    let link = &cfg.link.name.0;
    (
        Path::new(cfg.networkmanager.connections_dir.as_path()).join(render::nm_keyfile_name(link)),
        Path::new(cfg.networkmanager.conf_dir.as_path()).join(render::nm_unmanaged_name(link)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Current, HostPath};
    use crate::state::{self, FileEntry, Original, Trust};

    fn file(host: &str, content: Option<&str>, ours: bool) -> FileSeen {
        FileSeen {
            path: HostPath {
                host: host.into(),
                real: host.into(),
            },
            current: content.map(|c| Current {
                content: c.as_bytes().to_vec(),
                mode: if host.ends_with(".nmconnection") {
                    0o600
                } else {
                    0o644
                },
                uid: 0,
                gid: 0,
            }),
            entry: ours.then(|| FileEntry {
                original: Original::Absent,
                written: state::digest(content.unwrap_or_default().as_bytes()),
            }),
            original: None,
        }
    }

    struct World {
        cfg: Config,
        backend: Backend,
        networkd_files: bool,
        networkd_enabled: bool,
        by_nodeprep: bool,
        keyfile: bool,
        snippet: bool,
        installed: bool,
        daemon: nm::Daemon,
        profile: Option<(bool, bool)>,
    }

    impl World {
        fn new(backend: Backend) -> World {
            World {
                cfg: Config::default(),
                backend,
                networkd_files: false,
                networkd_enabled: false,
                by_nodeprep: false,
                keyfile: false,
                snippet: false,
                installed: true,
                daemon: nm::Daemon::Running(Version(1, 42, 4)),
                profile: None,
            }
        }

        fn seen(&self) -> Seen {
            let cfg = &self.cfg;
            let (netdev, network) = networkd_paths(cfg);
            let (keyfile, snippet) = nm_paths(cfg);
            let some = |on: bool, text: String| on.then_some(text);
            let netdev_text = some(self.networkd_files, render::netdev(cfg));
            let network_text = some(self.networkd_files, render::network(cfg));
            let key_text = some(self.keyfile, render::nm_keyfile(cfg));
            let snip_text = some(self.snippet, render::nm_unmanaged(cfg));
            let uuid = render::nm_uuid("dummy0");
            Seen {
                backend: Ok(BackendChoice {
                    backend: self.backend,
                    how: "configured".into(),
                }),
                networkd: NetworkdSeen {
                    netdev: file(netdev.to_str().unwrap(), netdev_text.as_deref(), true),
                    network: file(network.to_str().unwrap(), network_text.as_deref(), true),
                    units: Some(Units {
                        state: Some(UnitState {
                            enabled: self.networkd_enabled,
                            wait_online_enabled: false,
                            active: self.networkd_enabled,
                        }),
                        enabled_by_nodeprep: self.by_nodeprep,
                    }),
                },
                nm: NmSeen {
                    keyfile: file(keyfile.to_str().unwrap(), key_text.as_deref(), true),
                    unmanaged: file(snippet.to_str().unwrap(), snip_text.as_deref(), true),
                    installed: self.installed,
                    live: Some(NmLive {
                        daemon: self.daemon.clone(),
                        profile: self.profile.map(|(from_file, active)| nm::Profile {
                            uuid: uuid.clone(),
                            name: "dummy0".into(),
                            filename: from_file.then(|| keyfile.clone()),
                            device: active.then(|| "dummy0".into()),
                            state: active.then(|| "activated".into()),
                        }),
                        unmanaged_effective: None,
                    }),
                },
                dirs: DirsSeen::default(),
            }
        }

        fn diff(&self, ensure: Ensure) -> Result<Plan> {
            let want = Want {
                ensure,
                cfg: &self.cfg,
                as_root: true,
                purge_data: false,
                trust: &Trust::Loaded,
                earlier: &[],
            };
            Network::diff(&want, &self.seen())
        }
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn networkd_beside_networkmanager_keeps_networkmanager_off_the_link() {
        let plan = World::new(Backend::Networkd).diff(Ensure::Present).unwrap();
        assert_eq!(
            names(&plan),
            [
                "write /etc/NetworkManager/conf.d/99-nodeprep-dummy0.conf (missing)",
                "NetworkManager: reload its configuration",
                "write /etc/systemd/network/10-dummy0.netdev (missing)",
                "write /etc/systemd/network/10-dummy0.network (missing)",
                "enable systemd-networkd.service",
                "keep systemd-networkd-wait-online.service disabled",
            ]
        );
        // Without NetworkManager installed, no snippet.
        let mut w = World::new(Backend::Networkd);
        w.installed = false;
        w.daemon = nm::Daemon::Missing;
        let plan = w.diff(Ensure::Present).unwrap();
        assert!(names(&plan).iter().all(|a| !a.contains("NetworkManager")));
    }

    #[test]
    fn networkmanager_writes_loads_and_activates_its_profile() {
        let w = World::new(Backend::NetworkManager);
        let plan = w.diff(Ensure::Present).unwrap();
        assert_eq!(
            names(&plan),
            [
                "write /etc/NetworkManager/system-connections/dummy0.nmconnection (missing)",
                "NetworkManager: load /etc/NetworkManager/system-connections/dummy0.nmconnection",
                "NetworkManager: activate dummy0's profile",
            ]
        );
        let Action::File(FileOp::Write { mode, .. }) = &plan.actions[0] else {
            panic!()
        };
        assert_eq!(*mode, 0o600);
        // In place, loaded and active: nothing to do.
        let mut w = World::new(Backend::NetworkManager);
        w.keyfile = true;
        w.profile = Some((true, true));
        let plan = w.diff(Ensure::Present).unwrap();
        assert!(plan.is_empty(), "{:?}", names(&plan));
        assert!(plan.state.ends_with("profile active"), "{}", plan.state);
        // Loaded but not active (someone ran nmcli connection down).
        w.profile = Some((true, false));
        assert_eq!(
            names(&w.diff(Ensure::Present).unwrap()),
            ["NetworkManager: activate dummy0's profile"]
        );
        // The keyfile was deleted: written, loaded and activated again.
        w.keyfile = false;
        w.profile = Some((true, true));
        assert_eq!(w.diff(Ensure::Present).unwrap().actions.len(), 3);
    }

    #[test]
    fn networkmanager_needs_its_daemon_and_a_port_capable_version() {
        let mut w = World::new(Backend::NetworkManager);
        w.daemon = nm::Daemon::NotRunning("Error: NetworkManager is not running.".into());
        let e = w.diff(Ensure::Present).unwrap_err().to_string();
        assert!(e.contains("NetworkManager is not running"), "{e}");
        let mut w = World::new(Backend::NetworkManager);
        w.cfg.dns.backend = DnsBackend::Resolved;
        let e = w.diff(Ensure::Present).unwrap_err().to_string();
        assert!(e.contains("1.58.1") && e.contains("1.42.4"), "{e}");
        w.daemon = nm::Daemon::Running(Version(1, 58, 1));
        let plan = w.diff(Ensure::Present).unwrap();
        let Action::File(FileOp::Write { content, .. }) = &plan.actions[0] else {
            panic!()
        };
        assert!(String::from_utf8_lossy(content).contains("dns=dns+udp://169.254.1.1:8600;"));
    }

    #[test]
    fn a_new_backend_undoes_what_nodeprep_did_for_the_old_one() {
        let mut w = World::new(Backend::NetworkManager);
        w.networkd_files = true;
        w.networkd_enabled = true;
        w.by_nodeprep = true;
        w.snippet = true;
        let plan = w.diff(Ensure::Present).unwrap();
        assert_eq!(
            names(&plan),
            [
                "remove /etc/systemd/network/10-dummy0.netdev",
                "remove /etc/systemd/network/10-dummy0.network",
                "disable systemd-networkd.service",
                "reload systemd-networkd",
                "remove /etc/NetworkManager/conf.d/99-nodeprep-dummy0.conf",
                "NetworkManager: reload its configuration",
                "write /etc/NetworkManager/system-connections/dummy0.nmconnection (missing)",
                "NetworkManager: load /etc/NetworkManager/system-connections/dummy0.nmconnection",
                "NetworkManager: activate dummy0's profile",
            ]
        );
        // networkd enabled by someone else stays enabled.
        w.by_nodeprep = false;
        let plan = w.diff(Ensure::Present).unwrap();
        assert!(!names(&plan).contains(&"disable systemd-networkd.service".to_string()));
        // Back to networkd: the profile goes, which deactivates it.
        let mut w = World::new(Backend::Networkd);
        w.keyfile = true;
        w.profile = Some((true, true));
        let plan = w.diff(Ensure::Present).unwrap();
        assert_eq!(
            names(&plan)[..2],
            [
                "remove /etc/NetworkManager/system-connections/dummy0.nmconnection",
                "NetworkManager: forget the profile of /etc/NetworkManager/system-connections/dummy0.nmconnection",
            ]
        );
    }

    #[test]
    fn remove_deactivates_and_forgets_the_profile_and_drops_the_snippet() {
        let mut w = World::new(Backend::NetworkManager);
        w.keyfile = true;
        w.snippet = true;
        w.profile = Some((true, true));
        let plan = w.diff(Ensure::Absent).unwrap();
        assert_eq!(
            names(&plan),
            [
                "NetworkManager: deactivate dummy0's profile",
                "remove /etc/NetworkManager/system-connections/dummy0.nmconnection",
                "NetworkManager: forget the profile of /etc/NetworkManager/system-connections/dummy0.nmconnection",
                "remove /etc/NetworkManager/conf.d/99-nodeprep-dummy0.conf",
                "NetworkManager: reload its configuration",
            ]
        );
        // A keyfile nodeprep did not write is left alone.
        let mut w = World::new(Backend::NetworkManager);
        w.keyfile = true;
        let mut seen = w.seen();
        seen.nm.keyfile.entry = None;
        seen.nm.keyfile.current.as_mut().unwrap().content = b"[connection]\nid=mine\n".to_vec();
        let want = Want {
            ensure: Ensure::Absent,
            cfg: &w.cfg,
            as_root: true,
            purge_data: false,
            trust: &Trust::Loaded,
            earlier: &[],
        };
        let plan = Network::diff(&want, &seen).unwrap();
        assert!(plan.is_empty(), "{:?}", names(&plan));
        assert!(plan.notes.iter().any(|n| n.contains("left alone")));
    }
}
