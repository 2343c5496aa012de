//! `docker-dns`: the link address as every container's default DNS server,
//! in the configuration of the engine that runs them.
//!
//! - Docker: `dns` in dockerd's `daemon.json` (merged: every other key and
//!   value is kept; an invalid file is an error naming it, never
//!   overwritten). Containers on the default bridge get it as their
//!   nameserver; on user-defined networks Docker's embedded resolver forwards
//!   to it. dockerd reads `daemon.json` only at start, and a restart stops
//!   the running containers unless `live-restore` is on. So nodeprep
//!   restarts dockerd only when nothing but its own containers runs (a fresh
//!   host), when live-restore is on, or when `docker.restart = "always"`;
//!   otherwise the restart is reported as pending: drift in `check`, a note
//!   in `apply`.
//! - Podman: `dns_servers` in a `containers.conf.d` drop-in of nodeprep's
//!   own (nothing to merge: Podman merges the files itself, later files
//!   winning, so a later file that sets `dns_servers` too is reported).
//!   Every `podman` command reads the files when it runs, but the API
//!   service (`podman.service`, started by `podman.socket`, kept running by
//!   registrator's event stream) reads them when it starts: an active one is
//!   restarted, which stops no container (`KillMode=process`: containers run
//!   under conmon); registrator's event stream ends with it, and registrator
//!   exits and is restarted by its policy. Containers that exist keep the
//!   DNS servers they have.
//!
//! The other engine's file is left as it is (`remove` undoes both).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::{Config, DockerRestart};
use crate::engine::host::EngineChoiceMade;
use crate::engine::{
    Action, ContainerOp, Ensure, FileOp, Host, Keep, Plan, Resource, UnitOp, Want,
};
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};
use crate::state::{self, Original};
use crate::sys::docker::{self, EngineKind};

pub const UNIT: &str = "docker.service";
/// Podman's API service: socket-activated by podman.socket.
pub const PODMAN_UNIT: &str = "podman.service";
/// Where dockerd writes its pid (its default `--pidfile`).
const PIDFILE: &str = "/var/run/docker.pid";
/// Podman's configuration files before the drop-in directories, in the
/// order Podman reads them (containers.conf(5)); each `.d` directory's
/// `*.conf` files follow their file in name order.
const PODMAN_CONFS: [&str; 2] = [
    "/usr/share/containers/containers.conf",
    "/etc/containers/containers.conf",
];

pub struct DockerDns;

pub struct Seen {
    /// Which engine (`None` for `remove`, which undoes both files).
    engine: Option<EngineChoiceMade>,
    /// `None` when Docker's side is not in question.
    docker: Option<DockerSide>,
    podman: PodmanSide,
    dirs: DirsSeen,
}

struct DockerSide {
    file: FileSeen,
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

/// One of Podman's configuration files and the `dns_servers` it sets
/// (`None`: it sets none; Err: it cannot be read).
type PodmanConf = (PathBuf, Result<Option<Vec<String>>, String>);

struct PodmanSide {
    dropin: FileSeen,
    /// When the drop-in last changed, as time since boot.
    mtime: Option<Duration>,
    /// Podman's other configuration files, in reading order, with the
    /// `dns_servers` each sets (Present on Podman only).
    others: Vec<PodmanConf>,
    /// `None` under `--root` or without systemd.
    service: Option<PodmanService>,
    offline: bool,
}

struct PodmanService {
    active: bool,
    /// When its main process started, as time since boot.
    started: Option<Duration>,
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
        let engine = match ensure {
            Ensure::Present => Some(host.facts.engine()?),
            Ensure::Absent => None,
        };
        let kind = engine.as_ref().map(|e| e.kind);
        let docker = if kind != Some(EngineKind::Podman) {
            Some(observe_docker(host, ensure)?)
        } else {
            None
        };
        let dropin_path = cfg.docker.podman_conf.as_path();
        let dropin = files::observe(host, dropin_path, ensure)?;
        // Live only: under --root there is no service to compare with.
        let mtime = if host.offline() {
            None
        } else {
            std::fs::symlink_metadata(&dropin.path.real)
                .and_then(|m| m.modified())
                .ok()
                .and_then(docker::since_boot)
        };
        let others = if kind == Some(EngineKind::Podman) {
            podman_confs(host, dropin_path)?
                .into_iter()
                .map(|p| {
                    let dns = read_dns_servers(&host.path(&p).real);
                    (p, dns)
                })
                .collect()
        } else {
            Vec::new()
        };
        let service = match (host.offline(), host.facts.systemd) {
            (false, Some(systemd)) if kind != Some(EngineKind::Docker) => {
                let active = systemd.is_active(PODMAN_UNIT)?;
                let started = if active {
                    systemd
                        .main_pid(PODMAN_UNIT)?
                        .and_then(docker::process_started)
                } else {
                    None
                };
                Some(PodmanService { active, started })
            }
            _ => None,
        };
        let paths = [cfg.docker.daemon_json.as_path(), dropin_path];
        Ok(Some(Seen {
            engine,
            docker,
            podman: PodmanSide {
                dropin,
                mtime,
                others,
                service,
                offline: host.offline(),
            },
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &paths)?,
                Ensure::Present => DirsSeen::default(),
            },
        }))
    }

    fn diff(want: &Want, seen: &Option<Seen>) -> Result<Plan> {
        let Some(seen) = seen else {
            return Ok(Plan::skipped("docker.daemon_dns = false"));
        };
        let cfg = want.cfg;
        let ip = cfg.link.address.ip();
        let mut plan = Plan::default();
        match (&seen.engine, &seen.docker) {
            (Some(engine), _) if engine.kind == EngineKind::Podman => {
                plan.state = format!(
                    "{} sets dns_servers {ip}; engine: {}",
                    seen.podman.dropin.path, engine.how
                );
                podman_plan(want, &seen.podman, &mut plan)?;
                if seen.docker.as_ref().is_some_and(|d| d.file.entry.is_some()) {
                    plan.notes.push(format!(
                        "{} left as it is (remove undoes nodeprep's dns there)",
                        cfg.docker.daemon_json.as_path().display()
                    ));
                }
            }
            (engine, Some(docker)) => {
                plan.state = format!(
                    "{} sets dns {ip}",
                    cfg.docker.daemon_json.as_path().display()
                );
                if let Some(engine) = engine {
                    plan.state = format!("{}; engine: {}", plan.state, engine.how);
                }
                docker_plan(want, docker, &mut plan)?;
                if want.ensure == Ensure::Absent {
                    podman_plan(want, &seen.podman, &mut plan)?;
                } else if seen.podman.dropin.entry.is_some() {
                    plan.notes.push(format!(
                        "{} left as it is (remove takes it away)",
                        seen.podman.dropin.path
                    ));
                }
            }
            (_, None) => bail!("docker-dns: Docker's side was not observed"),
        }
        if want.ensure == Ensure::Absent {
            let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
            plan.actions.extend(rmdirs);
        }
        Ok(plan)
    }
}

fn observe_docker(host: &Host, ensure: Ensure) -> Result<DockerSide> {
    let cfg = &host.cfg;
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
    Ok(DockerSide {
        file,
        mtime,
        daemon,
    })
}

/// `daemon.json`: merged in (or nodeprep's `dns` taken out), and dockerd
/// restarted when it may be.
fn docker_plan(want: &Want, seen: &DockerSide, plan: &mut Plan) -> Result<()> {
    let cfg = want.cfg;
    let path = cfg.docker.daemon_json.as_path();
    let before = plan.actions.len();
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
        }
    }
    let changes = plan.actions[before..].iter().any(Action::changes_file);
    let Some(daemon) = &seen.daemon else {
        plan.notes.push("dockerd not restarted under --root".into());
        return Ok(());
    };
    let Some(started) = daemon.started else {
        if changes {
            plan.notes
                .push("dockerd is not running: it reads the file when it starts".into());
        }
        return Ok(());
    };
    let stale = seen.mtime.is_some_and(|m| m > started);
    if !changes && !stale {
        return Ok(());
    }
    match restart_refused(cfg, daemon) {
        None => plan
            .actions
            .push(Action::Container(ContainerOp::RestartEngine { unit: UNIT })),
        Some(why) => plan.pending.push(format!(
            "dockerd must restart to read {}: {why}",
            path.display()
        )),
    }
    Ok(())
}

/// Podman's drop-in: written (or taken away), a later file that overrides
/// it reported, and an active API service restarted so that it reads it.
fn podman_plan(want: &Want, seen: &PodmanSide, plan: &mut Plan) -> Result<()> {
    let cfg = want.cfg;
    let content = render::podman_dropin(cfg);
    let before = plan.actions.len();
    match want.ensure {
        Ensure::Present => plan.actions.extend(files::present(
            &seen.dropin,
            content.clone().into_bytes(),
            FileSpec::plain(want),
        )),
        Ensure::Absent => {
            let undo = files::absent(&seen.dropin, Some(content.as_bytes()), None);
            plan.actions.extend(undo.action);
            plan.notes.extend(undo.note);
            plan.forget.extend(undo.forget);
        }
    }
    let changes = plan.actions[before..].iter().any(Action::changes_file);
    if want.ensure == Ensure::Present {
        let ours = vec![cfg.link.address.ip().to_string()];
        match effective_dns(&seen.dropin.path.host, &ours, &seen.others) {
            Ok((from, dns)) if dns != ours => plan.pending.push(format!(
                "{} sets dns_servers {dns:?} and Podman reads it after {}: containers would not get {}",
                from.display(),
                seen.dropin.path,
                ours[0]
            )),
            Ok(_) => {}
            Err(e) => plan.notes.push(e),
        }
    }
    let Some(service) = &seen.service else {
        if seen.offline {
            plan.notes
                .push("Podman's API service not restarted under --root".into());
        } else if changes && want.ensure == Ensure::Present {
            plan.notes.push(
                "the podman command reads it at every run; restart the Podman API service yourself so that containers created through the API get it too".into(),
            );
        }
        return Ok(());
    };
    let stale = match (service.started, seen.mtime) {
        (Some(started), Some(m)) => m > started,
        _ => false,
    };
    if service.active && (changes || stale) {
        plan.actions
            .push(Action::Unit(UnitOp::TryRestart(PODMAN_UNIT)));
    }
    Ok(())
}

/// Podman's configuration files around the drop-in, in reading order (the
/// drop-in itself excluded).
fn podman_confs(host: &Host, dropin: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let dropin_dir = dropin.parent().unwrap_or(Path::new("/"));
    for conf in PODMAN_CONFS {
        let conf = Path::new(conf);
        out.push(conf.to_path_buf());
        let dir = PathBuf::from(format!("{}.d", conf.display()));
        let mut names = crate::sys::files::list_dir(&host.path(&dir).real)?;
        if dir == dropin_dir {
            // Where the drop-in goes: it takes its place in name order.
            names.push(dropin.file_name().unwrap_or_default().into());
        }
        names.sort();
        names.dedup();
        for n in names {
            let p = dir.join(&n);
            if p.extension().is_some_and(|e| e == "conf") {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// `[containers] dns_servers` of one file: `None` when it does not set it
/// (or does not exist); Err with a remark when it cannot be read.
fn read_dns_servers(path: &Path) -> Result<Option<Vec<String>>, String> {
    // Read inside the root, capped, never blocking on a special file; a
    // link (Debian's alternatives, an image's) is followed inside the root.
    let bytes = match crate::sys::files::read_through_links(path, crate::sys::files::MAX_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e:#}", path.display())),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{} is not UTF-8: Podman refuses it too", path.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        format!(
            "{} is not valid TOML ({e}): Podman refuses it too",
            path.display()
        )
    })?;
    Ok(doc
        .get("containers")
        .and_then(|c| c.get("dns_servers"))
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        }))
}

/// Which file's `dns_servers` Podman ends up with, and its value, once the
/// drop-in at `dropin` holds `ours`.
fn effective_dns(
    dropin: &Path,
    ours: &[String],
    files: &[PodmanConf],
) -> Result<(PathBuf, Vec<String>), String> {
    let mut last = (dropin.to_path_buf(), ours.to_vec());
    for (path, dns) in files {
        if path == dropin {
            last = (dropin.to_path_buf(), ours.to_vec());
            continue;
        }
        match dns {
            Ok(Some(dns)) => last = (path.clone(), dns.clone()),
            Ok(None) => {}
            Err(e) => return Err(e.clone()),
        }
    }
    Ok(last)
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

    fn podman_side(dropin: Option<&str>, others: &[(&str, Option<&[&str]>)]) -> PodmanSide {
        let mut seen = seen(dropin);
        seen.path = HostPath {
            host: "/etc/containers/containers.conf.d/nodeprep.conf".into(),
            real: "/etc/containers/containers.conf.d/nodeprep.conf".into(),
        };
        PodmanSide {
            dropin: seen,
            mtime: None,
            others: others
                .iter()
                .map(|(p, d)| {
                    (
                        PathBuf::from(p),
                        Ok(d.map(|d| d.iter().map(|s| s.to_string()).collect())),
                    )
                })
                .collect(),
            service: Some(PodmanService {
                active: true,
                started: None,
            }),
            offline: false,
        }
    }

    fn plan_for(side: &PodmanSide, ensure: Ensure) -> Plan {
        let cfg = Config::default();
        let want = Want {
            ensure,
            cfg: &cfg,
            as_root: true,
            purge_data: false,
            trust: &crate::state::Trust::Loaded,
            earlier: &[],
        };
        let mut plan = Plan::default();
        podman_plan(&want, side, &mut plan).unwrap();
        plan
    }

    #[test]
    fn podman_gets_a_drop_in_and_its_api_service_restarted() {
        let plan = plan_for(&podman_side(None, &[]), Ensure::Present);
        let names: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            names,
            [
                "write /etc/containers/containers.conf.d/nodeprep.conf (missing)",
                "restart podman.service if it runs"
            ]
        );
        // In place: nothing, and no restart.
        let ours = render::podman_dropin(&Config::default());
        let plan = plan_for(&podman_side(Some(&ours), &[]), Ensure::Present);
        assert!(plan.is_empty() && plan.pending.is_empty());
        // remove takes it away (nodeprep's, per its record) and restarts.
        let mut side = podman_side(Some(&ours), &[]);
        side.dropin.entry = Some(crate::state::FileEntry {
            original: Original::Absent,
            written: state::digest(ours.as_bytes()),
        });
        let plan = plan_for(&side, Ensure::Absent);
        assert_eq!(plan.actions.len(), 2, "{:?}", plan.actions);
    }

    #[test]
    fn a_later_podman_file_that_sets_dns_servers_is_reported() {
        let dropin = "/etc/containers/containers.conf.d/nodeprep.conf";
        let side = podman_side(
            None,
            &[
                ("/etc/containers/containers.conf", Some(&["8.8.8.8"])),
                ("/etc/containers/containers.conf.d/00-site.conf", None),
                (dropin, None),
                (
                    "/etc/containers/containers.conf.d/zz-site.conf",
                    Some(&["1.1.1.1"]),
                ),
            ],
        );
        let plan = plan_for(&side, Ensure::Present);
        assert!(
            plan.pending[0].contains("zz-site.conf") && plan.pending[0].contains("1.1.1.1"),
            "{:?}",
            plan.pending
        );
        // An earlier file's value is overridden by the drop-in: fine.
        let side = podman_side(
            None,
            &[
                ("/etc/containers/containers.conf", Some(&["8.8.8.8"])),
                (dropin, None),
            ],
        );
        assert!(plan_for(&side, Ensure::Present).pending.is_empty());
    }

    #[test]
    fn dns_servers_are_read_from_the_containers_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.conf");
        std::fs::write(&p, "[engine]\ncgroup_manager = \"systemd\"\n[containers]\ndns_servers = [\"10.0.0.2\", \"10.0.0.3\"]\n").unwrap();
        assert_eq!(
            read_dns_servers(&p).unwrap(),
            Some(vec!["10.0.0.2".to_string(), "10.0.0.3".to_string()])
        );
        std::fs::write(&p, "[containers]\nlog_driver = \"journald\"\n").unwrap();
        assert_eq!(read_dns_servers(&p).unwrap(), None);
        std::fs::write(&p, "[containers\n").unwrap();
        assert!(read_dns_servers(&p).unwrap_err().contains("not valid TOML"));
        assert_eq!(read_dns_servers(&dir.path().join("none")).unwrap(), None);
    }
}
