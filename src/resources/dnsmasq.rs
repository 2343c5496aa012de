//! `dnsmasq`: with `dns.backend = "dnsmasq"` (the recipe), the drop-in that
//! forwards the consul domain to the agent and every other name to the
//! host's upstreams; with `"resolved"`, a drop-in that keeps an installed
//! dnsmasq off the link address, which systemd-resolved answers on. dnsmasq
//! is restarted when the file changed, or started when it is enabled but
//! not running (recorded: `remove` stops it again, as it was).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{DnsBackend, ResolvFile};
use crate::engine::{Action, Ensure, Forget, Host, Plan, Resource, UnitOp, Want};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};

const UNIT: &str = "dnsmasq.service";
/// systemd-resolved's list of the real upstream servers (not its stub).
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
/// Where the resolvconf package keeps the file /etc/resolv.conf links to.
const RESOLVCONF_RUN: &str = "/run/resolvconf";

pub struct Dnsmasq;

pub struct Seen {
    file: FileSeen,
    dirs: DirsSeen,
    /// The upstream list dnsmasq should read (see [`resolv_file`]).
    resolv: Option<PathBuf>,
    /// Under `--root`: dnsmasq is neither looked for nor restarted.
    live: Option<Live>,
}

struct Live {
    installed: bool,
    /// `None` when systemd is not running.
    unit: Option<UnitState>,
}

struct UnitState {
    active: bool,
    enabled: bool,
    /// The record says it was not running until nodeprep started it.
    started_by_nodeprep: bool,
}

impl Resource for Dnsmasq {
    const ID: &'static str = "dnsmasq";
    const DEPENDS_ON: &'static [&'static str] = &["link"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let path = host.cfg.dnsmasq.file.as_path();
        let live = if host.offline() {
            None
        } else {
            Some(Live {
                installed: dnsmasq_installed(host.facts.systemd.is_some()),
                unit: match host.facts.systemd {
                    Some(systemd) => Some(UnitState {
                        active: systemd.is_active(UNIT)?,
                        enabled: systemd.is_enabled(UNIT)?,
                        started_by_nodeprep: host.store.record.started_units.contains(UNIT),
                    }),
                    None => None,
                },
            })
        };
        Ok(Seen {
            file: files::observe(host, path, ensure)?,
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[path])?,
                Ensure::Present => DirsSeen::default(),
            },
            resolv: resolv_file(host)?,
            live,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let cfg = want.cfg;
        let backend = cfg.dns.backend;
        let content = match backend {
            DnsBackend::Dnsmasq => render::dnsmasq(cfg, seen.resolv.as_deref()),
            DnsBackend::Resolved => render::dnsmasq_keep_off(cfg),
        };
        let mut plan = Plan {
            state: cfg.dnsmasq.file.as_path().display().to_string(),
            ..Plan::default()
        };
        let installed = seen.live.as_ref().is_none_or(|l| l.installed);
        match want.ensure {
            Ensure::Present if !installed && backend == DnsBackend::Resolved => {
                plan.state =
                    "dnsmasq is not installed (dns.backend = \"resolved\" needs none)".into();
                return Ok(plan);
            }
            Ensure::Present if !installed => {
                bail!("dnsmasq is not installed (no dnsmasq in /usr/sbin or PATH): install it (apt-get install dnsmasq), then run nodeprep apply again");
            }
            Ensure::Present => {
                plan.actions.extend(files::present(
                    &seen.file,
                    content.into_bytes(),
                    FileSpec::plain(want),
                ));
                match (&seen.resolv, backend) {
                    (Some(r), DnsBackend::Dnsmasq) => {
                        plan.notes.push(format!("upstreams from {}", r.display()))
                    }
                    (None, DnsBackend::Dnsmasq) => plan
                        .notes
                        .push("upstreams from dnsmasq's default list".into()),
                    (_, DnsBackend::Resolved) => plan
                        .notes
                        .push("kept off the link address (systemd-resolved answers there)".into()),
                }
            }
            Ensure::Absent => {
                let undo = files::absent(&seen.file, Some(content.as_bytes()), None);
                plan.actions.extend(undo.action);
                plan.notes.extend(undo.note);
                plan.forget.extend(undo.forget);
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
            }
        }
        let changed = plan.changes_files();
        let Some(live) = &seen.live else {
            return Ok(plan);
        };
        let Some(unit) = &live.unit else {
            if changed {
                plan.notes
                    .push("systemd is not running: restart dnsmasq yourself".into());
            }
            return Ok(plan);
        };
        // dnsmasq reads its configuration only at start; SIGHUP rereads
        // hosts files, not server= lines.
        match want.ensure {
            Ensure::Present if unit.active => {
                if changed {
                    plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)));
                }
            }
            // Enabled but not running: Debian's own dnsmasq fails beside
            // systemd-resolved (both want port 53 of every address) until
            // nodeprep's file narrows its addresses. Started once the file
            // lets it, and recorded as started by nodeprep.
            Ensure::Present if unit.enabled && live.installed => {
                plan.actions.push(Action::Unit(UnitOp::Start(UNIT)));
            }
            Ensure::Present => {
                if changed {
                    plan.notes
                        .push("dnsmasq is not running; it reads the file when it starts".into());
                }
            }
            Ensure::Absent => {
                plan.forget.push(Forget::Unit(UNIT.into()));
                if unit.active && unit.started_by_nodeprep {
                    // As it was before nodeprep: not running. Restarted
                    // without nodeprep's file it would only fail again (on
                    // a systemd-resolved host, Debian's configuration wants
                    // port 53 of every address).
                    plan.actions.push(Action::Unit(UnitOp::Stop(UNIT)));
                } else if changed && unit.active {
                    plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)));
                }
            }
        }
        Ok(plan)
    }
}

/// The upstream list dnsmasq should read. With `auto`:
/// - systemd-resolved running: its real upstream list, never its stub (and
///   without the dummy link, whose only domain is routing-only);
/// - `/etc/resolv.conf` a link into resolvconf's directory: dnsmasq's own
///   default, which Debian wires to resolvconf;
/// - otherwise the plain `/etc/resolv.conf`. The `resolver` resource puts
///   dnsmasq's own 127.0.0.1 first there; dnsmasq skips a server that is one
///   of its own listening addresses.
fn resolv_file(host: &Host) -> Result<Option<PathBuf>> {
    Ok(match &host.cfg.dnsmasq.resolv_file {
        ResolvFile::None => None,
        ResolvFile::Path(p) => Some(p.clone()),
        ResolvFile::Auto if host.offline() => {
            // An image: resolved's list if the tree has one, else dnsmasq's
            // default; the live host decides again at its own apply.
            let upstreams = Path::new(RESOLVED_UPSTREAMS);
            crate::sys::files::exists(&host.path(upstreams).real).then(|| upstreams.to_path_buf())
        }
        ResolvFile::Auto => {
            let upstreams = Path::new(RESOLVED_UPSTREAMS);
            let etc = host.cfg.dns.resolv_conf.as_path();
            let target = crate::sys::files::read_link(&host.path(etc).real);
            if crate::sys::files::exists(&host.path(upstreams).real)
                && host.facts.resolved_active()?
            {
                Some(upstreams.to_path_buf())
            } else if target.is_some_and(|t| {
                t.starts_with(RESOLVCONF_RUN) || t.starts_with("../run/resolvconf")
            }) {
                None
            } else {
                Some(etc.to_path_buf())
            }
        }
    })
}

/// Whether the dnsmasq service is installed. With systemd, its unit must be
/// there: the `dnsmasq-base` package (which NetworkManager depends on) ships
/// the binary without the service that reads /etc/dnsmasq.d.
fn dnsmasq_installed(systemd: bool) -> bool {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("dnsmasq").is_file()))
        .unwrap_or(false);
    let binary = in_path || Path::new("/usr/sbin/dnsmasq").is_file();
    let unit = [
        "/lib/systemd/system/dnsmasq.service",
        "/usr/lib/systemd/system/dnsmasq.service",
        "/etc/systemd/system/dnsmasq.service",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    binary && (unit || !systemd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{Current, HostPath};
    use crate::state::{self, FileEntry, Original, Trust};

    /// A host with dnsmasq installed and enabled, nodeprep's file in place
    /// (`ours`) or not, the unit running or not.
    fn seen(cfg: &Config, ours: bool, active: bool, started_by_nodeprep: bool) -> Seen {
        let path = cfg.dnsmasq.file.as_path();
        let content = render::dnsmasq(cfg, None);
        Seen {
            file: FileSeen {
                path: HostPath {
                    host: path.to_path_buf(),
                    real: path.to_path_buf(),
                },
                current: ours.then(|| Current {
                    content: content.clone().into_bytes(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }),
                entry: ours.then(|| FileEntry {
                    original: Original::Absent,
                    written: state::digest(content.as_bytes()),
                }),
                original: None,
            },
            dirs: DirsSeen::default(),
            resolv: None,
            live: Some(Live {
                installed: true,
                unit: Some(UnitState {
                    active,
                    enabled: true,
                    started_by_nodeprep,
                }),
            }),
        }
    }

    fn actions(ensure: Ensure, seen: &Seen, cfg: &Config) -> Vec<String> {
        let want = Want {
            ensure,
            cfg,
            as_root: true,
            purge_data: false,
            trust: &Trust::Loaded,
            earlier: &[],
        };
        let plan = Dnsmasq::diff(&want, seen).unwrap();
        plan.actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_dnsmasq_that_nodeprep_started_is_stopped_again_by_remove() {
        let cfg = Config::default();
        // Running before nodeprep (a host without systemd-resolved): the
        // file written, dnsmasq restarted to read it; remove restarts it
        // without the file.
        assert_eq!(
            actions(Ensure::Present, &seen(&cfg, false, true, false), &cfg),
            [
                "write /etc/dnsmasq.d/consul.conf (missing)",
                "restart dnsmasq.service"
            ]
        );
        assert_eq!(
            actions(Ensure::Absent, &seen(&cfg, true, true, false), &cfg),
            [
                "remove /etc/dnsmasq.d/consul.conf",
                "restart dnsmasq.service"
            ]
        );
        // Enabled but failed before nodeprep (Debian's dnsmasq beside
        // systemd-resolved): started once the file is there, recorded;
        // remove stops it instead of restarting it into the same failure.
        assert_eq!(
            actions(Ensure::Present, &seen(&cfg, false, false, false), &cfg),
            [
                "write /etc/dnsmasq.d/consul.conf (missing)",
                "start dnsmasq.service"
            ]
        );
        assert_eq!(
            actions(Ensure::Absent, &seen(&cfg, true, true, true), &cfg),
            [
                "remove /etc/dnsmasq.d/consul.conf",
                "stop dnsmasq.service (nodeprep started it)"
            ]
        );
        // Converged: nothing, whoever started it.
        assert!(actions(Ensure::Present, &seen(&cfg, true, true, true), &cfg).is_empty());
    }
}
