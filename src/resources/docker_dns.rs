//! `docker-dns`: the link address as every container's default DNS server,
//! through `dns` in dockerd's `daemon.json` (merged: every other key and
//! value is kept; an invalid file is an error naming it, never overwritten).
//!
//! Containers on the default bridge get it as their nameserver; on
//! user-defined networks Docker's embedded resolver forwards to it. dockerd
//! reads `daemon.json` only at start, and a restart stops the running
//! containers unless `live-restore` is on. So nodeprep restarts dockerd only
//! when nothing but its own containers runs (a fresh host), when live-restore
//! is on, or when `docker.restart = "always"`; otherwise the restart is
//! reported as pending: drift in `check`, a note in `apply`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::{Config, DockerRestart};
use crate::engine::{Action, ContainerOp, Ensure, FileOp, Host, Keep, Plan, Resource, Want};
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};
use crate::state::{self, Original};
use crate::sys::docker;

pub const UNIT: &str = "docker.service";
/// Where dockerd writes its pid (its default `--pidfile`).
const PIDFILE: &str = "/var/run/docker.pid";

pub struct DockerDns;

pub struct Seen {
    file: FileSeen,
    dirs: DirsSeen,
    /// When the file last changed, as time since boot (`None`: before the
    /// boot, or absent).
    mtime: Option<Duration>,
    /// `None` under `--root`: dockerd is not looked at.
    daemon: Option<Daemon>,
}

/// The running dockerd, as far as a restart decision needs it.
struct Daemon {
    /// When it started, as time since boot; `None` when no dockerd runs.
    started: Option<Duration>,
    /// dockerd is a systemd service nodeprep can restart.
    restartable: bool,
    /// Asked only when a restart may be needed.
    engine: Option<Engine>,
}

struct Engine {
    foreign: Vec<String>,
    live_restore: bool,
}

impl Resource for DockerDns {
    const ID: &'static str = "docker-dns";
    const DEPENDS_ON: &'static [&'static str] = &["link"];
    type Observed = Option<Seen>;

    fn observe(host: &Host, ensure: Ensure) -> Result<Option<Seen>> {
        let cfg = &host.cfg;
        if !cfg.docker.daemon_dns {
            return Ok(None);
        }
        let path = cfg.docker.daemon_json.as_path();
        let file = files::observe(host, path, ensure)?;
        let mut mtime = None;
        let daemon = if host.offline() {
            None
        } else {
            // Live: the root is /, where the host's own path is the file.
            mtime = std::fs::symlink_metadata(&file.path.real)
                .and_then(|m| m.modified())
                .ok()
                .and_then(docker::since_boot);
            let started = docker::daemon_started(Path::new(PIDFILE));
            let restartable = match host.facts.systemd {
                Some(systemd) => systemd.is_active(UNIT)?,
                None => false,
            };
            let want = desired(ensure, cfg, &file)?;
            let pending = started.is_some_and(|s| mtime.is_some_and(|m| m > s));
            let changes = want.as_deref() != file.current.as_ref().map(|c| c.content.as_slice());
            // The engine is asked only when a restart is in question: a
            // converged run makes no extra API calls.
            let engine = if started.is_some() && (pending || changes) {
                let d = host.facts.docker()?;
                Some(Engine {
                    foreign: d.running_foreign()?,
                    live_restore: d.live_restore()?,
                })
            } else {
                None
            };
            Some(Daemon {
                started,
                restartable,
                engine,
            })
        };
        Ok(Some(Seen {
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[path])?,
                Ensure::Present => DirsSeen::default(),
            },
            file,
            mtime,
            daemon,
        }))
    }

    fn diff(want: &Want, seen: &Option<Seen>) -> Result<Plan> {
        let Some(seen) = seen else {
            return Ok(Plan::skipped("docker.daemon_dns = false"));
        };
        let cfg = want.cfg;
        let path = cfg.docker.daemon_json.as_path();
        let mut plan = Plan {
            state: format!("{} sets dns {}", path.display(), cfg.link.address.ip()),
            ..Plan::default()
        };
        match want.ensure {
            Ensure::Present => {
                let content =
                    desired(Ensure::Present, cfg, &seen.file)?.expect("a present file has content");
                plan.actions
                    .extend(files::present(&seen.file, content, FileSpec::plain(want)));
            }
            Ensure::Absent => {
                plan.actions.extend(absent(want, &seen.file)?);
                if seen.file.entry.is_some() {
                    plan.forget
                        .push(crate::engine::Forget::File(seen.file.path.host.clone()));
                }
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
            }
        }
        let Some(daemon) = &seen.daemon else {
            plan.notes.push("dockerd not restarted under --root".into());
            return Ok(plan);
        };
        let Some(started) = daemon.started else {
            if plan.changes_files() {
                plan.notes
                    .push("dockerd is not running: it reads the file when it starts".into());
            }
            return Ok(plan);
        };
        let stale = seen.mtime.is_some_and(|m| m > started);
        if !plan.changes_files() && !stale {
            return Ok(plan);
        }
        let why = restart_refused(cfg, daemon);
        match why {
            None => plan
                .actions
                .push(Action::Container(ContainerOp::RestartEngine { unit: UNIT })),
            Some(why) => plan.pending.push(format!(
                "dockerd must restart to read {}: {why}",
                path.display()
            )),
        }
        Ok(plan)
    }
}

/// Why dockerd may not be restarted now, or `None` when it may.
fn restart_refused(cfg: &Config, daemon: &Daemon) -> Option<String> {
    if !daemon.restartable {
        return Some("dockerd is not an active systemd service here; restart it yourself".into());
    }
    let engine = daemon.engine.as_ref()?;
    match cfg.docker.restart {
        DockerRestart::Always => None,
        DockerRestart::Never => Some("docker.restart = \"never\"; restart it yourself".into()),
        DockerRestart::WhenIdle if engine.live_restore || engine.foreign.is_empty() => None,
        DockerRestart::WhenIdle => Some(format!(
            "a restart would stop {} (not nodeprep's, and live-restore is off); restart it yourself, or set docker.restart = \"always\"",
            engine.foreign.join(", ")
        )),
    }
}

/// The whole file nodeprep wants: the current object with `dns` set to the
/// link address (foreign keys and their order kept), or what `remove`
/// leaves. `None` when the file should not exist.
fn desired(ensure: Ensure, cfg: &Config, seen: &FileSeen) -> Result<Option<Vec<u8>>> {
    let current = seen.current.as_ref().map(|c| c.content.as_slice());
    let ours = Value::from(vec![Value::from(cfg.link.address.ip().to_string())]);
    match ensure {
        Ensure::Present => {
            let mut doc = match current {
                Some(bytes) => parse(bytes, &seen.path.to_string())?,
                None => serde_json::Map::new(),
            };
            if doc.get("dns") == Some(&ours) {
                return Ok(current.map(<[u8]>::to_vec));
            }
            doc.insert("dns".into(), ours);
            Ok(Some(render(&doc)))
        }
        Ensure::Absent => match current {
            None => Ok(None),
            Some(bytes) => {
                let mut doc = parse(bytes, &seen.path.to_string())?;
                if doc.get("dns") != Some(&ours) {
                    // Not nodeprep's value: the file stays as it is.
                    return Ok(Some(bytes.to_vec()));
                }
                doc.remove("dns");
                Ok(Some(render(&doc)))
            }
        },
    }
}

fn parse(bytes: &[u8], name: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes).with_context(|| {
        format!("{name} is not valid JSON; nodeprep never overwrites it: fix it first")
    })? {
        Value::Object(map) => Ok(map),
        _ => bail!("{name} is not a JSON object; nodeprep never overwrites it: fix it first"),
    }
}

fn render(doc: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("serializing JSON values");
    bytes.push(b'\n');
    bytes
}

/// Undoing `dns`: the original back when the file is as nodeprep left it
/// (or the file gone, if nodeprep created it); otherwise only nodeprep's
/// key goes.
fn absent(want: &Want, seen: &FileSeen) -> Result<Option<Action>> {
    let Some(cur) = &seen.current else {
        return Ok(match (&seen.entry, &seen.original) {
            (
                Some(state::FileEntry {
                    original: how @ Original::Kept { .. },
                    ..
                }),
                Some(original),
            ) => Some(Action::File(FileOp::Restore {
                path: seen.path.clone(),
                original: original.clone(),
                how: *how,
                old: None,
                keep: Keep::Nothing,
                secret: None,
            })),
            _ => None,
        });
    };
    let untouched = seen
        .entry
        .as_ref()
        .is_some_and(|e| e.written == state::digest(&cur.content));
    if untouched {
        match (&seen.entry, &seen.original) {
            (
                Some(state::FileEntry {
                    original: how @ Original::Kept { .. },
                    ..
                }),
                Some(original),
            ) => {
                return Ok(Some(Action::File(FileOp::Restore {
                    path: seen.path.clone(),
                    original: original.clone(),
                    how: *how,
                    old: Some(cur.clone()),
                    keep: Keep::Nothing,
                    secret: None,
                })))
            }
            (
                Some(state::FileEntry {
                    original: Original::Absent,
                    ..
                }),
                _,
            ) => {
                return Ok(Some(Action::File(FileOp::Remove {
                    path: seen.path.clone(),
                    old: cur.clone(),
                    keep: Keep::Nothing,
                    secret: None,
                })))
            }
            _ => {}
        }
    }
    let stripped = desired(Ensure::Absent, want.cfg, seen)?.unwrap_or_default();
    if stripped == cur.content {
        return Ok(None);
    }
    Ok(Some(Action::File(FileOp::Write {
        path: seen.path.clone(),
        content: stripped,
        mode: cur.mode,
        owner: want.as_root.then_some((cur.uid, cur.gid)),
        old: Some(cur.clone()),
        keep: Keep::Nothing,
        why: "nodeprep's dns taken out",
        secret: None,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Current, HostPath};

    fn seen(content: Option<&str>) -> FileSeen {
        FileSeen {
            path: HostPath {
                host: "/etc/docker/daemon.json".into(),
                real: "/etc/docker/daemon.json".into(),
            },
            current: content.map(|c| Current {
                content: c.as_bytes().to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
            entry: None,
            original: None,
        }
    }

    fn text(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.unwrap_or_default()).unwrap()
    }

    #[test]
    fn dns_is_merged_into_whatever_is_there() {
        let cfg = Config::default();
        assert_eq!(
            text(desired(Ensure::Present, &cfg, &seen(None)).unwrap()),
            "{\n  \"dns\": [\n    \"169.254.1.1\"\n  ]\n}\n"
        );
        // Foreign keys keep their values and their order; dns is replaced.
        assert_eq!(
            text(
                desired(
                    Ensure::Present,
                    &cfg,
                    &seen(Some("{\"log-driver\": \"journald\", \"dns\": [\"8.8.8.8\"], \"bip\": \"10.9.0.1/24\"}"))
                )
                .unwrap()
            ),
            "{\n  \"log-driver\": \"journald\",\n  \"dns\": [\n    \"169.254.1.1\"\n  ],\n  \"bip\": \"10.9.0.1/24\"\n}\n"
        );
        // Already right: the bytes stay as they are, formatting included.
        let ok = "{\"dns\":[\"169.254.1.1\"],\"debug\":true}";
        assert_eq!(
            text(desired(Ensure::Present, &cfg, &seen(Some(ok))).unwrap()),
            ok
        );
        // remove takes out only nodeprep's dns.
        assert_eq!(
            text(desired(Ensure::Absent, &cfg, &seen(Some(ok))).unwrap()),
            "{\n  \"debug\": true\n}\n"
        );
    }

    #[test]
    fn an_invalid_file_is_an_error_naming_it() {
        let cfg = Config::default();
        for bad in ["{\"dns\": [", "[1, 2]", "\u{feff}x"] {
            let e = desired(Ensure::Present, &cfg, &seen(Some(bad))).unwrap_err();
            assert!(
                format!("{e:#}").contains("/etc/docker/daemon.json"),
                "{e:#}"
            );
        }
    }

    fn daemon(restartable: bool, foreign: &[&str], live_restore: bool) -> Daemon {
        Daemon {
            started: Some(Duration::ZERO),
            restartable,
            engine: Some(Engine {
                foreign: foreign.iter().map(|s| s.to_string()).collect(),
                live_restore,
            }),
        }
    }

    #[test]
    fn restart_only_when_idle_or_allowed() {
        let mut cfg = Config::default();
        assert_eq!(restart_refused(&cfg, &daemon(true, &[], false)), None);
        assert_eq!(restart_refused(&cfg, &daemon(true, &["web"], true)), None);
        let why = restart_refused(&cfg, &daemon(true, &["web"], false)).unwrap();
        assert!(
            why.contains("web") && why.contains("docker.restart"),
            "{why}"
        );
        assert!(restart_refused(&cfg, &daemon(false, &[], false)).is_some());
        cfg.docker.restart = DockerRestart::Always;
        assert_eq!(restart_refused(&cfg, &daemon(true, &["web"], false)), None);
        cfg.docker.restart = DockerRestart::Never;
        assert!(restart_refused(&cfg, &daemon(true, &[], false)).is_some());
    }
}
