//! `networkd`: the .netdev/.network pair that recreates the link at boot,
//! and systemd-networkd enabled so that it reads them.

use anyhow::{bail, Result};

use crate::engine::{Action, Ensure, Forget, Host, Plan, Resource, UnitOp, Want};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};

const UNIT: &str = "systemd-networkd.service";
const WAIT_ONLINE: &str = "systemd-networkd-wait-online.service";

pub struct Networkd;

pub struct Seen {
    netdev: FileSeen,
    network: FileSeen,
    dirs: DirsSeen,
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

impl Resource for Networkd {
    const ID: &'static str = "networkd";
    const DEPENDS_ON: &'static [&'static str] = &["link"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let (netdev, network) = paths(&host.cfg);
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
        Ok(Seen {
            netdev: files::observe(host, &netdev, ensure)?,
            network: files::observe(host, &network, ensure)?,
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[&netdev, &network])?,
                Ensure::Present => DirsSeen::default(),
            },
            units,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let cfg = want.cfg;
        let mut plan = Plan {
            state: format!(
                "{}/10-{}.{{netdev,network}}",
                cfg.networkd.dir.as_path().display(),
                cfg.link.name
            ),
            ..Plan::default()
        };
        let contents = [render::netdev(cfg), render::network(cfg)];
        let pairs = [(&seen.netdev, &contents[0]), (&seen.network, &contents[1])];
        match want.ensure {
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
                    let undo = files::absent(seen, Some(content.as_bytes()), None);
                    plan.actions.extend(undo.action);
                    plan.notes.extend(undo.note);
                    plan.forget.extend(undo.forget);
                }
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
            }
        }
        let files_change = plan.changes_files();
        let Some(units) = &seen.units else {
            plan.notes
                .push("systemd-networkd not managed under --root".into());
            return Ok(plan);
        };
        let Some(state) = &units.state else {
            if want.ensure == Ensure::Absent {
                plan.notes
                    .push("systemd is not running: systemd-networkd left as it is".into());
                return Ok(plan);
            }
            bail!(
                "systemd is not running on this host: systemd-networkd cannot recreate {} after a reboot",
                cfg.link.name
            );
        };
        match want.ensure {
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
                plan.forget.push(Forget::Unit(UNIT.into()));
                if units.enabled_by_nodeprep && state.enabled {
                    // `disable` follows Also= too: the socket and
                    // wait-online go back to disabled with it.
                    plan.actions.push(Action::Unit(UnitOp::Disable(UNIT)));
                } else if state.enabled {
                    plan.notes.push(format!(
                        "{UNIT} stays enabled: nodeprep did not enable it (per its record)"
                    ));
                }
            }
        }
        // A running networkd only reads new, changed or removed files on
        // reload. Never rely on it at apply time: the link resource makes
        // the live state.
        if files_change && state.active {
            plan.actions.push(Action::Unit(UnitOp::ReloadNetworkd));
        }
        Ok(plan)
    }
}

fn paths(cfg: &crate::config::Config) -> (std::path::PathBuf, std::path::PathBuf) {
    let (netdev, network) = render::networkd_names(&cfg.link.name.0);
    let dir = cfg.networkd.dir.as_path();
    (dir.join(netdev), dir.join(network))
}
