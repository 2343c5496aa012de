//! `consul` and `registrator`: containers kept in spec through the Docker
//! Engine API.
//!
//! A container's desired spec is hashed into a label. Absent: created and
//! started; stopped: started; spec changed: recreated; in spec and running:
//! untouched. A container of that name that nodeprep did not create is never
//! removed unless the config says so (`replace_unmanaged`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::config::Config;
use crate::engine::{Action, ContainerOp, Ensure, FileOp, Host, HostPath, Plan, Resource, Want};
use crate::resources::files;
use crate::sys::docker::{ContainerSpec, ContainerState};

/// Where the official image's entrypoint looks for config and data.
const CONSUL_CONFIG_MOUNT: &str = "/consul/config";
const CONSUL_DATA_MOUNT: &str = "/consul/data";

/// The consul agent container, as `docker run` would say:
/// `docker run -d --name consul --network host --restart always
///   -e CONSUL_DISABLE_PERM_MGMT=true
///   -v /etc/consul.d:/consul/config:ro -v /var/lib/consul:/consul/data
///   hashicorp/consul:<pinned> agent`
///
/// `agent` is explicit: the image's default command is a dev server. The
/// image's entrypoint turns `agent` into `consul agent -data-dir=/consul/data
/// -config-dir=/consul/config`, so the agent reads nodeprep's files from the
/// mounted config dir. CONSUL_DISABLE_PERM_MGMT stops that entrypoint from
/// chowning the bind mounts to its consul user: the config dir stays
/// root-owned (as `check` expects) and nodeprep gives the data dir to the
/// image's consul user (`consul.uid`/`consul.gid`) itself.
pub fn consul_spec(cfg: &Config) -> ContainerSpec {
    let c = &cfg.consul;
    ContainerSpec {
        image: c.image.0.clone(),
        cmd: vec!["agent".into()],
        env: vec!["CONSUL_DISABLE_PERM_MGMT=true".into()],
        binds: vec![
            format!(
                "{}:{CONSUL_CONFIG_MOUNT}:ro",
                c.config_dir.as_path().display()
            ),
            format!("{}:{CONSUL_DATA_MOUNT}", c.data_dir.as_path().display()),
        ],
        network_mode: "host".into(),
        restart: "always".into(),
    }
}

/// The registrator container, given the engine's socket (`docker.socket`,
/// or the one `auto` found):
/// `docker run -d --name registrator --network host --restart always
///   -v /var/run/docker.sock:/tmp/docker.sock
///   gliderlabs/registrator:v7 -ip <bind_addr> [args..] consul://169.254.1.1:8500`
///
/// `-ip` makes services register under the host's address (without it
/// registrator uses whatever the host name resolves to, often 127.0.1.1);
/// registrator stops parsing options at the URI, so the URI comes last.
///
/// `-retry-attempts=-1` (unless `registrator.args` sets its own): registrator
/// v7 pings the agent once at start and exits when it does not answer
/// (default 0 retries). Started beside a consul container that takes a
/// moment to bind its ports, it would crash-loop under restart policy
/// `always` until the agent is up; retrying forever keeps it running.
pub fn registrator_spec(cfg: &Config, bind_addr: IpAddr, socket: &Path) -> ContainerSpec {
    let mut cmd = vec!["-ip".to_string(), bind_addr.to_string()];
    let args = &cfg.registrator.args;
    if !args
        .iter()
        .any(|a| a.0.trim_start_matches('-').starts_with("retry-attempts"))
    {
        cmd.push("-retry-attempts=-1".into());
    }
    cmd.extend(args.iter().map(|a| a.0.clone()));
    // `[v6]:port` for IPv6, as the URI needs.
    cmd.push(format!("consul://{}", cfg.agent_http()));
    ContainerSpec {
        image: cfg.registrator.image.0.clone(),
        cmd,
        env: vec![],
        binds: vec![format!("{}:/tmp/docker.sock", socket.display())],
        network_mode: "host".into(),
        restart: "always".into(),
    }
}

pub struct Consul;
pub struct Registrator;

/// A container as observed, with what deciding its plan needs.
pub struct Seen {
    /// `--root`: containers are not managed.
    offline: bool,
    container: Option<ContainerState>,
    /// Whether the image is there; only asked when a create is planned.
    image_present: bool,
    /// The bind address (registrator's `-ip`), or why it cannot be chosen.
    bind: Result<IpAddr, String>,
    /// The consul data dir's mode and owner (consul only, when present).
    data_dir: Option<(u32, u32, u32)>,
    /// The engine's socket (registrator mounts it).
    socket: PathBuf,
    /// Which engine, where (for the report).
    engine: String,
}

impl Resource for Consul {
    const ID: &'static str = "consul";
    const DEPENDS_ON: &'static [&'static str] = &["link", "consul-config"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let mut seen = observe(host, ensure, &host.cfg.consul.container.0, || {
            Ok(consul_spec(&host.cfg))
        })?;
        if !seen.offline {
            seen.data_dir = files::dir_owner(host.cfg.consul.data_dir.as_path())?;
        }
        Ok(seen)
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        if seen.offline {
            return Ok(Plan::skipped("containers not managed under --root"));
        }
        let cfg = want.cfg;
        let name = &cfg.consul.container.0;
        let data_dir = cfg.consul.data_dir.as_path();
        let data_path = HostPath {
            host: data_dir.to_path_buf(),
            real: data_dir.to_path_buf(),
        };
        if want.ensure == Ensure::Absent {
            let mut plan = absent(name, seen.container.as_ref());
            if want.purge_data && seen.data_dir.is_some() {
                plan.actions
                    .push(Action::File(FileOp::Purge { path: data_path }));
            } else if seen.data_dir.is_some() {
                plan.notes.push(format!(
                    "data dir {} kept (remove --purge-data deletes it)",
                    data_dir.display()
                ));
            }
            return Ok(plan);
        }
        // The agent reads its config at start (a reload would not re-bind
        // changed addresses): a config change planned in this run restarts
        // it.
        let restart_for_config = want.changes("consul-config");
        let mut plan = present(
            name,
            &consul_spec(cfg),
            seen,
            cfg.consul.replace_unmanaged,
            "consul.replace_unmanaged",
            restart_for_config,
        )?;
        plan.state = format!("{} on {}", plan.state, seen.engine);
        // The agent runs as the image's consul user and must own its data dir.
        let owner = want.as_root.then_some((cfg.consul.uid, cfg.consul.gid));
        let why = match seen.data_dir {
            None => Some("missing".to_string()),
            Some((mode, uid, gid)) if mode != 0o750 || owner.is_some_and(|o| o != (uid, gid)) => {
                Some(format!("mode {mode:o} owner {uid}:{gid}"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            plan.actions.insert(
                0,
                Action::File(FileOp::Dir {
                    path: data_path,
                    mode: 0o750,
                    owner,
                    why,
                }),
            );
        }
        Ok(plan)
    }
}

impl Resource for Registrator {
    const ID: &'static str = "registrator";
    const DEPENDS_ON: &'static [&'static str] = &["consul"];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        observe(host, ensure, &host.cfg.registrator.container.0, || {
            let bind = host.facts.bind_addr()?;
            let socket = host.facts.docker()?.socket();
            Ok(registrator_spec(&host.cfg, bind.ip, socket))
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        if seen.offline {
            return Ok(Plan::skipped("containers not managed under --root"));
        }
        let cfg = want.cfg;
        let name = &cfg.registrator.container.0;
        if want.ensure == Ensure::Absent {
            return Ok(absent(name, seen.container.as_ref()));
        }
        let bind = seen.bind.clone().map_err(|e| anyhow!("{e}"))?;
        present(
            name,
            &registrator_spec(cfg, bind, &seen.socket),
            seen,
            cfg.registrator.replace_unmanaged,
            "registrator.replace_unmanaged",
            false,
        )
    }
}

/// Inspects container `name`; for `Present`, also whether the image of the
/// spec `desired` gives is there when the container will have to be created.
fn observe(
    host: &Host,
    ensure: Ensure,
    name: &str,
    desired: impl FnOnce() -> Result<ContainerSpec>,
) -> Result<Seen> {
    if host.offline() {
        return Ok(Seen {
            offline: true,
            container: None,
            image_present: false,
            bind: Err("offline".into()),
            data_dir: None,
            socket: PathBuf::new(),
            engine: String::new(),
        });
    }
    let docker = host.facts.docker()?;
    // A crash-looping agent can be caught in the moment it runs: settled.
    let container = docker.inspect_settled(name, std::time::Duration::from_millis(300))?;
    let mut image_present = true;
    let mut bind = Err("not needed".to_string());
    if ensure == Ensure::Present {
        let spec = desired()?;
        image_present =
            !needs_create(container.as_ref(), &spec) || docker.image_exists(&spec.image)?;
        bind = host
            .facts
            .bind_addr()
            .map(|b| b.ip)
            .map_err(|e| format!("{e:#}"));
    }
    Ok(Seen {
        offline: false,
        container,
        image_present,
        bind,
        data_dir: None,
        socket: docker.socket().to_path_buf(),
        engine: docker.describe(),
    })
}

/// Pure: undoing a container. Only one nodeprep created (labelled) is
/// removed; another of that name is reported and left running.
pub fn absent(name: &str, observed: Option<&ContainerState>) -> Plan {
    match observed {
        None => Plan {
            state: format!("{name} absent"),
            ..Plan::default()
        },
        Some(c) if !c.managed => {
            let left = format!(
                "container {name} is not nodeprep's (no nodeprep.managed label; image {}): left {}",
                c.image,
                if c.running { "running" } else { "as it is" }
            );
            Plan {
                state: format!("{name} (image {})", c.image),
                notes: vec![left],
                ..Plan::default()
            }
        }
        Some(c) => Plan {
            state: format!("{name} ({})", c.image),
            actions: vec![Action::Container(ContainerOp::Remove {
                name: name.to_string(),
                why: "created by nodeprep",
            })],
            ..Plan::default()
        },
    }
}

/// Whether `diff` will create the container (and so needs to know whether
/// the image is there): saves an API call on every converged run.
fn needs_create(observed: Option<&ContainerState>, spec: &ContainerSpec) -> bool {
    observed.is_none_or(|c| !c.managed || c.hash.as_deref() != Some(spec.hash().as_str()))
}

/// Pure: the actions that bring container `name` to `spec`.
fn present(
    name: &str,
    spec: &ContainerSpec,
    seen: &Seen,
    replace_unmanaged: bool,
    replace_key: &str,
    restart_for_config: bool,
) -> Result<Plan> {
    diff(
        name,
        spec,
        seen.container.as_ref(),
        seen.image_present,
        replace_unmanaged,
        replace_key,
        restart_for_config,
    )
}

fn diff(
    name: &str,
    spec: &ContainerSpec,
    observed: Option<&ContainerState>,
    image_present: bool,
    replace_unmanaged: bool,
    replace_key: &str,
    restart_for_config: bool,
) -> Result<Plan> {
    let hash = spec.hash();
    let create = |why: &'static str, remove: bool| {
        let mut actions = Vec::new();
        if !image_present {
            actions.push(Action::Container(ContainerOp::Pull {
                image: spec.image.clone(),
            }));
        }
        if remove {
            actions.push(Action::Container(ContainerOp::Remove {
                name: name.to_string(),
                why,
            }));
        }
        actions.push(Action::Container(ContainerOp::Create {
            name: name.to_string(),
            spec: Box::new(spec.clone()),
        }));
        actions.push(Action::Container(ContainerOp::Start {
            name: name.to_string(),
        }));
        actions
    };
    let Some(c) = observed else {
        return Ok(Plan {
            actions: create("absent", false),
            state: format!("{name} absent"),
            ..Plan::default()
        });
    };
    if !c.managed {
        if !replace_unmanaged {
            bail!(
                "container {name} exists but nodeprep did not create it (no nodeprep.managed label; image {}): \
                 remove it, or set {replace_key} = true to let nodeprep replace it",
                c.image
            );
        }
        return Ok(Plan {
            actions: create("not created by nodeprep", true),
            state: format!("{name} unmanaged (image {})", c.image),
            ..Plan::default()
        });
    }
    if c.hash.as_deref() != Some(hash.as_str()) {
        return Ok(Plan {
            actions: create("spec changed", true),
            state: format!("{name} out of spec (image {})", c.image),
            ..Plan::default()
        });
    }
    let mut plan = Plan {
        state: format!(
            "{name} {} ({}, started {})",
            if c.running { "running" } else { "stopped" },
            spec.image,
            c.started_at
        ),
        ..Plan::default()
    };
    let said = |c: &ContainerState| match &c.last_output {
        Some(out) => format!("; its last output: {out}"),
        None => String::new(),
    };
    if c.restarting && !restart_for_config {
        bail!(
            "container {name} keeps restarting (last exit code {}, {} restarts){}: see `docker logs {name}`",
            c.exit_code,
            c.restart_count,
            said(c)
        );
    }
    if !c.running && !c.restarting && c.exit_code != 0 {
        plan.notes.push(format!(
            "{name} had exited with code {}{}",
            c.exit_code,
            said(c)
        ));
    }
    if !c.running && !c.restarting {
        plan.actions.push(Action::Container(ContainerOp::Start {
            name: name.to_string(),
        }));
    } else if restart_for_config {
        // The agent reads its config at start; a reload would not re-bind
        // changed addresses.
        plan.actions.push(Action::Container(ContainerOp::Restart {
            name: name.to_string(),
            why: "consul config changed",
        }));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        consul_spec(&Config::default())
    }

    fn state(managed: bool, hash: Option<String>, running: bool) -> ContainerState {
        ContainerState {
            managed,
            hash,
            image: "hashicorp/consul:1.20.1".into(),
            running,
            restarting: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            restart_count: 0,
            exit_code: 0,
            last_output: None,
        }
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn consul_spec_is_what_the_docs_say() {
        let s = spec();
        assert_eq!(s.image, "hashicorp/consul:1.20.1");
        assert_eq!(s.cmd, vec!["agent"]);
        assert_eq!(
            s.binds,
            vec![
                "/etc/consul.d:/consul/config:ro",
                "/var/lib/consul:/consul/data"
            ]
        );
        assert_eq!(
            (s.network_mode.as_str(), s.restart.as_str()),
            ("host", "always")
        );
        assert_eq!(s.env, vec!["CONSUL_DISABLE_PERM_MGMT=true"]);
    }

    #[test]
    fn registrator_options_come_before_the_uri() {
        let cfg = Config::parse(
            "[registrator]\nargs = [\"-internal\", \"-resync=30\"]\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let sock = Path::new("/var/run/docker.sock");
        let s = registrator_spec(&cfg, IpAddr::from([10, 0, 0, 5]), sock);
        assert_eq!(
            s.cmd,
            vec![
                "-ip",
                "10.0.0.5",
                "-retry-attempts=-1",
                "-internal",
                "-resync=30",
                "consul://169.254.1.1:8500"
            ]
        );
        let cfg = Config::parse(
            "[registrator]\nargs = [\"-retry-attempts=5\"]\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let s = registrator_spec(&cfg, IpAddr::from([10, 0, 0, 5]), sock);
        assert_eq!(
            s.cmd,
            vec![
                "-ip",
                "10.0.0.5",
                "-retry-attempts=5",
                "consul://169.254.1.1:8500"
            ]
        );
        assert_eq!(s.binds, vec!["/var/run/docker.sock:/tmp/docker.sock"]);
        let s = registrator_spec(
            &cfg,
            IpAddr::from([10, 0, 0, 5]),
            Path::new("/run/podman/podman.sock"),
        );
        assert_eq!(s.binds, vec!["/run/podman/podman.sock:/tmp/docker.sock"]);
    }

    #[test]
    fn absent_is_pulled_created_started() {
        let p = diff("consul", &spec(), None, false, false, "k", false).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "pull hashicorp/consul:1.20.1",
                "create container consul from hashicorp/consul:1.20.1",
                "start container consul"
            ]
        );
        let p = diff("consul", &spec(), None, true, false, "k", false).unwrap();
        assert_eq!(p.actions.len(), 2);
    }

    #[test]
    fn in_spec_and_running_needs_nothing() {
        let p = diff(
            "consul",
            &spec(),
            Some(&state(true, Some(spec().hash()), true)),
            true,
            false,
            "k",
            false,
        )
        .unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn stopped_is_started_changed_is_recreated() {
        let p = diff(
            "consul",
            &spec(),
            Some(&state(true, Some(spec().hash()), false)),
            true,
            false,
            "k",
            false,
        )
        .unwrap();
        assert_eq!(names(&p), vec!["start container consul"]);
        let p = diff(
            "consul",
            &spec(),
            Some(&state(true, Some("old".into()), true)),
            true,
            false,
            "k",
            false,
        )
        .unwrap();
        assert_eq!(names(&p)[0], "remove container consul (spec changed)");
        assert_eq!(p.actions.len(), 3);
    }

    #[test]
    fn config_change_restarts_a_running_agent() {
        let p = diff(
            "consul",
            &spec(),
            Some(&state(true, Some(spec().hash()), true)),
            true,
            false,
            "k",
            true,
        )
        .unwrap();
        assert_eq!(
            names(&p),
            vec!["restart container consul (consul config changed)"]
        );
    }

    #[test]
    fn unmanaged_is_refused_unless_allowed() {
        let e = diff(
            "consul",
            &spec(),
            Some(&state(false, None, true)),
            true,
            false,
            "consul.replace_unmanaged",
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("consul.replace_unmanaged = true"),
            "{e}"
        );
        let p = diff(
            "consul",
            &spec(),
            Some(&state(false, None, true)),
            true,
            true,
            "k",
            false,
        )
        .unwrap();
        assert_eq!(
            names(&p)[0],
            "remove container consul (not created by nodeprep)"
        );
    }

    #[test]
    fn hash_covers_every_field() {
        let base = spec();
        let mut variants = Vec::new();
        let mut s = base.clone();
        s.image = "hashicorp/consul:1.21.0".into();
        variants.push(s);
        let mut s = base.clone();
        s.cmd.push("-ui".into());
        variants.push(s);
        let mut s = base.clone();
        s.env.clear();
        variants.push(s);
        let mut s = base.clone();
        s.binds.pop();
        variants.push(s);
        let mut s = base.clone();
        s.network_mode = "bridge".into();
        variants.push(s);
        let mut s = base.clone();
        s.restart = "no".into();
        variants.push(s);
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
    }

    #[test]
    fn remove_takes_only_labelled_containers() {
        let p = absent("consul", Some(&state(true, Some("h".into()), true)));
        assert_eq!(
            names(&p),
            vec!["remove container consul (created by nodeprep)"]
        );
        let p = absent("consul", Some(&state(false, None, true)));
        assert!(p.is_empty());
        assert!(p.notes[0].contains("not nodeprep's"), "{:?}", p.notes);
        assert!(absent("consul", None).is_empty());
    }
}
