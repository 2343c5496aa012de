//! `resolver`: the host's own resolver finds the consul domain, through the
//! tool that owns it, never by writing a file that tool overwrites.
//!
//! - systemd-resolved running (most current hosts): the consul domain, and
//!   only it, is routed through the dummy link: its DNS server is the link
//!   address (dnsmasq on port 53, or with `dns.backend = "resolved"` the
//!   agent's DNS port), `~consul` is its routing-only domain, and it is no
//!   default route. Set live through resolved's API here; the link's
//!   `.network` file carries the same settings across reboots. A link with
//!   only routing-only domains is not written to resolved's upstream list
//!   (`/run/systemd/resolve/resolv.conf`), so dnsmasq, which reads that list,
//!   never forwards to itself.
//! - `dns.backend = "resolved"` also makes resolved answer on the link
//!   address (a drop-in with `DNSStubListenerExtra=`, systemd 247 or newer),
//!   for containers; resolved keeps its per-link settings across the
//!   restart that takes.
//! - No resolved, a plain `/etc/resolv.conf`: dnsmasq (127.0.0.1) becomes its
//!   first nameserver, the host's servers stay below it.
//! - resolvconf owns the file: Debian's dnsmasq registers 127.0.0.1 with it
//!   by itself. NetworkManager writing the file: reported, not fought.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{Config, DnsBackend};
use crate::engine::{
    Action, Ensure, FileOp, Forget, Host, Keep, Plan, ResolverOp, Resource, UnitOp, Want,
};
use crate::render;
use crate::resolvconf;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};
use crate::state::{self, Original};
use crate::sys::files as sys_files;
use crate::sys::resolved::{self, LinkDns};

pub const UNIT: &str = "systemd-resolved.service";
/// The first systemd with `DNSStubListenerExtra=`.
const MIN_RESOLVED: u32 = 247;
/// Where resolved's stub resolv.conf lives (what `/etc/resolv.conf` links to
/// on hosts whose processes ask resolved).
const STUB: &str = "/run/systemd/resolve/stub-resolv.conf";
/// dnsmasq's address for host processes.
const LOCAL: &str = "127.0.0.1";

pub struct Resolver;

pub struct Seen {
    dropin: FileSeen,
    resolv_conf: ResolvConf,
    dirs: DirsSeen,
    /// `None` under `--root`.
    live: Option<Live>,
}

struct Live {
    /// `None` when resolved is not running.
    resolved: Option<Resolved>,
}

struct Resolved {
    version: u32,
    /// The dummy link's settings; `None` while the link does not exist.
    link: Option<LinkDns>,
}

/// Who owns `/etc/resolv.conf`.
enum ResolvConf {
    /// A symlink to resolved's stub: host processes ask resolved.
    Stub,
    /// A symlink elsewhere: resolved's full list, resolvconf's file, ...
    Symlink {
        target: PathBuf,
        content: Vec<u8>,
    },
    /// A regular file, with NetworkManager's mark or not.
    File(FileSeen),
    Missing,
}

impl Resource for Resolver {
    const ID: &'static str = "resolver";
    const DEPENDS_ON: &'static [&'static str] = &["link", "dnsmasq"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let cfg = &host.cfg;
        let dropin_path = cfg.dns.resolved_dropin.as_path();
        let resolv_path = cfg.dns.resolv_conf.as_path();
        let live = if host.offline() {
            None
        } else {
            let resolved = if host.facts.resolved_active()? {
                Some(Resolved {
                    version: resolved::version()?,
                    link: resolved::link(&cfg.link.name.0)?,
                })
            } else {
                None
            };
            Some(Live { resolved })
        };
        let real = host.path(resolv_path).real;
        let resolv_conf = match sys_files::read_link(&real) {
            Some(target) => {
                let absolute = resolv_path.parent().unwrap_or(Path::new("/")).join(&target);
                if normalize(&absolute) == Path::new(STUB) {
                    ResolvConf::Stub
                } else {
                    ResolvConf::Symlink {
                        // Only looked at: a link to a file that is not
                        // there (yet) reads as empty.
                        content: sys_files::read_through_links(&real, sys_files::MAX_FILE)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        target,
                    }
                }
            }
            None if !sys_files::exists(&real) => ResolvConf::Missing,
            None => ResolvConf::File(files::observe(host, resolv_path, ensure)?),
        };
        Ok(Seen {
            dropin: files::observe(host, dropin_path, ensure)?,
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[dropin_path])?,
                Ensure::Present => DirsSeen::default(),
            },
            resolv_conf,
            live,
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let cfg = want.cfg;
        let backend = cfg.dns.backend;
        let mut plan = Plan {
            state: match backend {
                DnsBackend::Dnsmasq => "consul domain through dnsmasq".to_string(),
                DnsBackend::Resolved => {
                    format!("systemd-resolved answers on {}:53", cfg.link.address.ip())
                }
            },
            ..Plan::default()
        };
        let dropin = render::resolved_dropin(cfg);
        // The drop-in belongs to the resolved backend only: with dnsmasq
        // (or on remove) nodeprep's drop-in goes.
        if want.ensure == Ensure::Present && backend == DnsBackend::Resolved {
            plan.actions.extend(files::present(
                &seen.dropin,
                dropin.into_bytes(),
                FileSpec::plain(want),
            ));
        } else {
            let undo = files::absent(&seen.dropin, Some(dropin.as_bytes()), None);
            plan.actions.extend(undo.action);
            plan.notes.extend(undo.note);
            plan.forget.extend(undo.forget);
        }
        let dropin_changes = plan.changes_files();
        let Some(live) = &seen.live else {
            plan.notes
                .push("the host's live resolver is not managed under --root".into());
            return Ok(plan);
        };
        match (&live.resolved, want.ensure) {
            (Some(r), Ensure::Present) => {
                if backend == DnsBackend::Resolved && r.version < MIN_RESOLVED {
                    bail!(
                        "dns.backend = \"resolved\" needs systemd-resolved {MIN_RESOLVED} or newer (DNSStubListenerExtra=); this host has {}: use dns.backend = \"dnsmasq\"",
                        r.version
                    );
                }
                if dropin_changes {
                    plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)));
                }
                plan.actions.extend(route(cfg, r.link.as_ref()));
                if !matches!(seen.resolv_conf, ResolvConf::Stub) {
                    plan.pending.push(format!(
                        "host processes do not ask systemd-resolved ({} is not a link to {STUB}), so they do not see the consul domain: link it there",
                        cfg.dns.resolv_conf.as_path().display()
                    ));
                }
            }
            (Some(r), Ensure::Absent) => {
                if dropin_changes {
                    plan.actions.push(Action::Unit(UnitOp::Restart(UNIT)));
                }
                if r.link.as_ref().is_some_and(|l| *l == routed(cfg)) {
                    plan.actions.push(Action::Resolver(ResolverOp::Revert {
                        link: cfg.link.name.0.clone(),
                    }));
                }
            }
            (None, Ensure::Present) if backend == DnsBackend::Resolved => bail!(
                "dns.backend = \"resolved\" needs systemd-resolved running, and it is not: start it (systemctl enable --now systemd-resolved) or use dns.backend = \"dnsmasq\""
            ),
            (None, ensure) => {
                let (actions, pending) = plain(want, cfg, &seen.resolv_conf, ensure)?;
                plan.actions.extend(actions);
                plan.pending.extend(pending);
            }
        }
        if want.ensure == Ensure::Absent {
            if let ResolvConf::File(f) = &seen.resolv_conf {
                if f.entry.is_some() {
                    plan.forget.push(Forget::File(f.path.host.clone()));
                }
            }
            let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
            plan.actions.extend(rmdirs);
        }
        Ok(plan)
    }
}

/// What resolved should route through the dummy link.
fn routed(cfg: &Config) -> LinkDns {
    LinkDns {
        servers: vec![render::link_dns_server(cfg)],
        domains: vec![format!("~{}", cfg.consul.domain.0)],
        default_route: false,
    }
}

/// The settings that differ from [`routed`], as actions.
fn route(cfg: &Config, now: Option<&LinkDns>) -> Vec<Action> {
    let want = routed(cfg);
    let link = cfg.link.name.0.clone();
    let now = now.cloned().unwrap_or(LinkDns {
        default_route: true,
        ..LinkDns::default()
    });
    let mut actions = Vec::new();
    if now.servers != want.servers {
        actions.push(Action::Resolver(ResolverOp::SetServers {
            link: link.clone(),
            servers: want.servers,
        }));
    }
    if now.domains != want.domains {
        actions.push(Action::Resolver(ResolverOp::SetDomains {
            link: link.clone(),
            domains: want.domains,
        }));
    }
    if now.default_route {
        actions.push(Action::Resolver(ResolverOp::SetDefaultRoute {
            link,
            on: false,
        }));
    }
    actions
}

/// Hosts without resolved: dnsmasq first in a plain `/etc/resolv.conf`;
/// others' files reported, not fought.
fn plain(
    want: &Want,
    cfg: &Config,
    resolv: &ResolvConf,
    ensure: Ensure,
) -> Result<(Vec<Action>, Vec<String>)> {
    let name = cfg.dns.resolv_conf.as_path().display();
    let file = match resolv {
        ResolvConf::File(f) => f,
        ResolvConf::Stub => return Ok((Vec::new(), Vec::new())),
        ResolvConf::Missing if ensure == Ensure::Present => {
            return Ok((
                Vec::new(),
                vec![format!(
                    "{name} does not exist: host processes have no resolver to send the consul domain to dnsmasq"
                )],
            ))
        }
        ResolvConf::Missing => return Ok((Vec::new(), Vec::new())),
        ResolvConf::Symlink { target, content } => {
            let listed = resolvconf::servers(content).first().map(String::as_str) == Some(LOCAL);
            if ensure == Ensure::Absent || listed {
                return Ok((Vec::new(), Vec::new()));
            }
            // resolvconf: Debian's dnsmasq registers 127.0.0.1 with it when
            // it starts (its lo.dnsmasq record).
            return Ok((
                Vec::new(),
                vec![format!(
                    "{name} is a link to {} and does not list dnsmasq ({LOCAL}) first: host processes do not see the consul domain (with resolvconf, restarting dnsmasq registers it)",
                    target.display()
                )],
            ));
        }
    };
    let current = file.current.as_ref().map(|c| c.content.as_slice());
    if current.is_some_and(|c| c.starts_with(b"# Generated by NetworkManager")) {
        return Ok((
            Vec::new(),
            if ensure == Ensure::Present {
                vec![format!(
                    "NetworkManager writes {name} and would overwrite nodeprep's change: let it use systemd-resolved (main.dns=systemd-resolved) or put {LOCAL} first in the uplink connection's DNS servers"
                )]
            } else {
                Vec::new()
            },
        ));
    }
    let Some(cur) = &file.current else {
        return Ok((Vec::new(), Vec::new()));
    };
    let action = match ensure {
        Ensure::Present => files::present(
            file,
            resolvconf::merge(&cur.content, LOCAL),
            FileSpec::plain(want),
        ),
        Ensure::Absent => undo_plain(want, file, &cur.content),
    };
    Ok((action.into_iter().collect(), Vec::new()))
}

/// The original back when the file is as nodeprep left it, else only
/// nodeprep's line out.
fn undo_plain(want: &Want, file: &FileSeen, current: &[u8]) -> Option<Action> {
    let untouched = file
        .entry
        .as_ref()
        .is_some_and(|e| e.written == state::digest(current));
    if let (true, Some(entry), Some(original)) = (untouched, &file.entry, &file.original) {
        if let how @ Original::Kept { .. } = entry.original {
            return Some(Action::File(FileOp::Restore {
                path: file.path.clone(),
                original: original.clone(),
                how,
                old: file.current.clone(),
                keep: Keep::Nothing,
                secret: None,
            }));
        }
    }
    let stripped = resolvconf::unmerge(current, LOCAL);
    if stripped == current {
        return None;
    }
    let cur = file.current.as_ref()?;
    Some(Action::File(FileOp::Write {
        path: file.path.clone(),
        content: stripped,
        mode: cur.mode,
        owner: want.as_root.then_some((cur.uid, cur.gid)),
        old: Some(cur.clone()),
        keep: Keep::Nothing,
        why: "dnsmasq's line taken out",
        secret: None,
    }))
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(actions: &[Action]) -> Vec<String> {
        actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_consul_domain_only_is_routed_through_the_link() {
        let mut cfg = Config::default();
        assert_eq!(
            names(&route(&cfg, None)),
            [
                "resolved: DNS servers of dummy0: 169.254.1.1",
                "resolved: route ~consul through dummy0",
                "resolved: keep other names off dummy0"
            ]
        );
        assert!(route(&cfg, Some(&routed(&cfg))).is_empty());
        cfg.dns.backend = DnsBackend::Resolved;
        assert_eq!(routed(&cfg).servers, ["169.254.1.1:8600"]);
        let stale = LinkDns {
            servers: vec!["169.254.1.1".into()],
            domains: vec!["~consul".into()],
            default_route: false,
        };
        assert_eq!(
            names(&route(&cfg, Some(&stale))),
            ["resolved: DNS servers of dummy0: 169.254.1.1:8600"]
        );
    }

    #[test]
    fn relative_symlinks_are_resolved_against_etc() {
        assert_eq!(
            normalize(Path::new("/etc/../run/systemd/resolve/stub-resolv.conf")),
            PathBuf::from(STUB)
        );
    }
}
