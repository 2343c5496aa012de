//! `podman-boot`: on Podman, nodeprep's containers come back after a
//! reboot. Podman has no daemon that starts containers at boot: a container
//! with restart policy `always` is started again only by
//! `podman-restart.service` (`podman start --all --filter
//! restart-policy=always`), and registrator's bind mount needs the API
//! socket that `podman.socket` creates. nodeprep enables both (for the next
//! boot; recorded, so `remove` disables only what it enabled). Debian's
//! podman package enables both itself; other distributions leave
//! podman-restart.service disabled. On Docker the resource has nothing to do
//! (ok): dockerd starts such containers itself.

use anyhow::{bail, Result};

use crate::engine::{Action, Ensure, Forget, Host, Plan, Resource, UnitOp, Want};
use crate::sys::docker::{EngineKind, PODMAN_SOCKET};

const RESTART: &str = "podman-restart.service";
const SOCKET: &str = "podman.socket";
const UNITS: [&str; 2] = [RESTART, SOCKET];

pub struct PodmanBoot;

pub enum Seen {
    /// `--root`: units are not managed.
    Offline,
    /// The engine is Docker, with how nodeprep knows.
    Docker(String),
    Podman {
        /// How the engine was found; `None` for `remove`, which does not
        /// ask it.
        engine: Option<String>,
        /// Whether nodeprep talks to Podman on the socket podman.socket
        /// serves.
        on_podman_socket: bool,
        /// Whether systemd runs (else nothing is enabled or disabled).
        systemd: bool,
        units: Vec<UnitSeen>,
    },
}

pub struct UnitSeen {
    unit: &'static str,
    enabled: bool,
    /// The record says nodeprep enabled it.
    by_nodeprep: bool,
}

impl Resource for PodmanBoot {
    const ID: &'static str = "podman-boot";
    const DEPENDS_ON: &'static [&'static str] = &[];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        if host.offline() {
            return Ok(Seen::Offline);
        }
        let units = |host: &Host| -> Result<Vec<UnitSeen>> {
            UNITS
                .iter()
                .map(|&unit| {
                    Ok(UnitSeen {
                        unit,
                        enabled: match host.facts.systemd {
                            Some(systemd) => systemd.is_enabled(unit)?,
                            None => false,
                        },
                        by_nodeprep: host.store.record.enabled_units.contains(unit),
                    })
                })
                .collect()
        };
        let systemd = host.facts.systemd.is_some();
        if ensure == Ensure::Absent {
            // Undoing needs only the record: the engine may be gone.
            return Ok(Seen::Podman {
                engine: None,
                on_podman_socket: false,
                systemd,
                units: units(host)?,
            });
        }
        let engine = host.facts.engine()?;
        if engine.kind == EngineKind::Docker {
            return Ok(Seen::Docker(engine.how));
        }
        Ok(Seen::Podman {
            engine: Some(engine.how),
            on_podman_socket: host.facts.docker()?.socket() == std::path::Path::new(PODMAN_SOCKET),
            systemd,
            units: units(host)?,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let (engine, on_podman_socket, systemd, units) = match seen {
            Seen::Offline => return Ok(Plan::skipped("units not managed under --root")),
            // Nothing to do: the desired state holds by itself.
            Seen::Docker(how) => {
                return Ok(Plan {
                    state: format!(
                        "nothing to enable: dockerd starts containers with restart policy always itself; engine: {how}"
                    ),
                    ..Plan::default()
                })
            }
            Seen::Podman {
                engine,
                on_podman_socket,
                systemd,
                units,
            } => (engine, *on_podman_socket, *systemd, units),
        };
        let mut plan = Plan {
            state: format!("{RESTART} and {SOCKET} enabled"),
            ..Plan::default()
        };
        if let Some(how) = engine {
            plan.state = format!("{}; engine: {how}", plan.state);
        }
        if want.ensure == Ensure::Absent {
            let ours: Vec<&str> = units
                .iter()
                .filter(|u| u.by_nodeprep)
                .map(|u| u.unit)
                .collect();
            plan.state = if ours.is_empty() {
                "no Podman unit enabled by nodeprep".to_string()
            } else {
                format!("enabled by nodeprep: {}", ours.join(", "))
            };
        }
        if !systemd {
            if want.ensure == Ensure::Absent {
                if units.iter().any(|u| u.by_nodeprep) {
                    plan.notes
                        .push("systemd is not running: Podman's units left as they are".into());
                }
                return Ok(plan);
            }
            bail!(
                "systemd is not running on this host: nothing would start Podman's containers after a reboot ({RESTART} does that)"
            );
        }
        for u in units {
            match want.ensure {
                Ensure::Present if u.unit == SOCKET && !on_podman_socket => {
                    plan.notes.push(format!(
                        "{SOCKET} left as it is: nodeprep talks to Podman on another socket than {PODMAN_SOCKET}"
                    ));
                }
                Ensure::Present if !u.enabled => {
                    plan.actions.push(Action::Unit(UnitOp::Enable(u.unit)));
                }
                Ensure::Present => {}
                Ensure::Absent => {
                    plan.forget.push(Forget::Unit(u.unit.into()));
                    if u.by_nodeprep && u.enabled {
                        plan.actions.push(Action::Unit(UnitOp::Disable(u.unit)));
                    }
                }
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::Trust;

    fn diff(ensure: Ensure, seen: &Seen) -> Result<Plan> {
        let cfg = Config::default();
        let want = Want {
            ensure,
            cfg: &cfg,
            as_root: true,
            purge_data: false,
            trust: &Trust::Loaded,
            earlier: &[],
        };
        PodmanBoot::diff(&want, seen)
    }

    fn podman(enabled: [bool; 2], by_nodeprep: [bool; 2]) -> Seen {
        Seen::Podman {
            engine: Some("Podman 4.3.1 at /run/podman/podman.sock (auto)".into()),
            on_podman_socket: true,
            systemd: true,
            units: UNITS
                .iter()
                .enumerate()
                .map(|(i, &unit)| UnitSeen {
                    unit,
                    enabled: enabled[i],
                    by_nodeprep: by_nodeprep[i],
                })
                .collect(),
        }
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn podman_gets_its_boot_units_enabled_and_docker_needs_nothing() {
        let plan = diff(Ensure::Present, &podman([false, false], [false, false])).unwrap();
        assert_eq!(
            names(&plan),
            ["enable podman-restart.service", "enable podman.socket"]
        );
        let plan = diff(Ensure::Present, &podman([true, true], [false, false])).unwrap();
        assert!(plan.is_empty());
        let plan = diff(
            Ensure::Present,
            &Seen::Docker("Docker 20.10.24 at /var/run/docker.sock (auto)".into()),
        )
        .unwrap();
        assert!(plan.is_empty() && plan.skipped.is_none());
        assert!(
            plan.state.contains("dockerd starts containers"),
            "{}",
            plan.state
        );
        let e = diff(
            Ensure::Present,
            &Seen::Podman {
                engine: None,
                on_podman_socket: true,
                systemd: false,
                units: vec![],
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("podman-restart.service"), "{e}");
    }

    #[test]
    fn remove_disables_only_what_nodeprep_enabled() {
        let plan = diff(Ensure::Absent, &podman([true, true], [true, false])).unwrap();
        assert_eq!(names(&plan), ["disable podman-restart.service"]);
        assert_eq!(plan.state, "enabled by nodeprep: podman-restart.service");
        let plan = diff(Ensure::Absent, &podman([true, true], [false, false])).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.state, "no Podman unit enabled by nodeprep");
    }
}
