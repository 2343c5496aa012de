//! `dnsmasq`: with `dns.backend = "dnsmasq"` (the recipe), the drop-in that
//! forwards the consul domain to the agent and every other name to the
//! host's upstreams; with `"resolved"`, a drop-in that keeps an installed
//! dnsmasq off the link address, which systemd-resolved answers on. dnsmasq
//! is restarted (or started, when enabled but not running) when the file
//! changed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{DnsBackend, ResolvFile};
use crate::engine::{Action, Ensure, Host, Plan, Resource, UnitOp, Want};
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
        match seen.live.as_ref().map(|l| l.unit.as_ref()) {
            None => {}
            // dnsmasq reads its configuration only at start; SIGHUP rereads
            // hosts files, not server= lines. A dnsmasq that is enabled but
            // not running (Debian's default one fails beside
            // systemd-resolved: both want port 53 of every address) is
            // started once its file lets it.
            Some(Some(unit)) if changed && (unit.active || unit.enabled) => {
                plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)))
            }
            Some(Some(unit))
                if !unit.active && unit.enabled && want.ensure == Ensure::Present && installed =>
            {
                plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)))
            }
            Some(Some(unit)) if changed && !unit.active => plan
                .notes
                .push("dnsmasq is not running; it reads the file when it starts".into()),
            Some(None) if changed => plan
                .notes
                .push("systemd is not running: restart dnsmasq yourself".into()),
            Some(_) => {}
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
