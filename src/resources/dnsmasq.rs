//! `dnsmasq`: the drop-in that forwards the consul domain to the agent, and
//! a restart of a running dnsmasq when the file changed (or went).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::ResolvFile;
use crate::engine::{Action, Ensure, Host, Plan, Resource, UnitOp, Want};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};

const UNIT: &str = "dnsmasq.service";
/// systemd-resolved's list of the real upstream servers (not its stub).
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

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
    active: Option<bool>,
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
                installed: dnsmasq_installed(),
                active: match host.facts.systemd {
                    Some(systemd) => Some(systemd.is_active(UNIT)?),
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
            resolv: resolv_file(host),
            live,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let content = render::dnsmasq(want.cfg, seen.resolv.as_deref());
        let mut plan = Plan {
            state: want.cfg.dnsmasq.file.as_path().display().to_string(),
            ..Plan::default()
        };
        match want.ensure {
            Ensure::Present => {
                if seen.live.as_ref().is_some_and(|l| !l.installed) {
                    bail!("dnsmasq is not installed (no dnsmasq in /usr/sbin or PATH): install it (apt-get install dnsmasq), then run nodeprep apply again");
                }
                plan.actions.extend(files::present(
                    &seen.file,
                    content.into_bytes(),
                    FileSpec::plain(want),
                ));
                if let Some(r) = &seen.resolv {
                    plan.notes.push(format!("upstreams from {}", r.display()));
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
        if plan.changes_files() {
            match seen.live.as_ref().map(|l| l.active) {
                None => {}
                // dnsmasq reads its configuration only at start; SIGHUP
                // rereads hosts files, not server= lines.
                Some(Some(true)) => plan.actions.push(Action::Unit(UnitOp::Restart(UNIT))),
                Some(Some(false)) => plan
                    .notes
                    .push("dnsmasq is not running; it reads the file when it starts".into()),
                Some(None) => plan
                    .notes
                    .push("systemd is not running: restart dnsmasq yourself".into()),
            }
        }
        Ok(plan)
    }
}

/// The upstream list dnsmasq should read. With `auto`, resolved's real list
/// when resolved is in use: Debian's dnsmasq otherwise looks for
/// /run/dnsmasq/resolv.conf, which resolvconf would write but which is
/// missing on resolved hosts, leaving dnsmasq without upstreams.
fn resolv_file(host: &Host) -> Option<PathBuf> {
    match &host.cfg.dnsmasq.resolv_file {
        ResolvFile::None => None,
        ResolvFile::Path(p) => Some(p.clone()),
        ResolvFile::Auto => {
            let p = Path::new(RESOLVED_UPSTREAMS);
            crate::sys::files::exists(&host.path(p).real).then(|| p.to_path_buf())
        }
    }
}

fn dnsmasq_installed() -> bool {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("dnsmasq").is_file()))
        .unwrap_or(false);
    in_path || Path::new("/usr/sbin/dnsmasq").is_file()
}
