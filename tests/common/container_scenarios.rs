//! The container scenarios of nodeprep's `consul` and `registrator`
//! resources, for any engine: `tests/containers.rs` runs them against a
//! real dockerd, `tests/podman.rs` against rootful Podman's
//! Docker-compatible API. The images are stand-ins (tests/docker/,
//! standins/): the real consul and registrator images cannot be had here.
//! The stand-ins exercise nodeprep's container handling (they stay up only
//! when given what the real ones need); nothing here is a result about real
//! Consul.
//!
//! Each scenario uses its own container names and a temp dir for every
//! managed path, and runs nodeprep in live mode with `--only` the resources
//! under test. The engine is the test process's ([`docker::engine`]):
//! nodeprep finds it with `docker.socket = "auto"` (`docker.engine =
//! "podman"` for Podman, since a dockerd answers first on this machine).
//! Where the engines differ in what they report, the helpers below say so.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, Run, BIN};
use crate::docker::{self, Containers, Outcome};

/// The `[docker]` keys that point nodeprep at the test process's engine.
fn engine_keys() -> &'static str {
    match docker::engine() {
        docker::Engine::Docker => "",
        docker::Engine::Podman => "engine = \"podman\"\n",
    }
}

/// A container's bind mounts as given: Podman reports them with their
/// mount options (`/a:/b:rw,rprivate,rbind`), Docker as created (`/a:/b`).
pub fn binds(container: &serde_json::Value) -> Vec<String> {
    container["HostConfig"]["Binds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b = b.as_str().unwrap();
            let b = b.split(',').next().unwrap();
            b.strip_suffix(":rw").unwrap_or(b).to_string()
        })
        .collect()
}

/// A container's image as given: Podman reports short names qualified
/// (`localhost/nodeprep-test/...`).
pub fn image_of(container: &serde_json::Value) -> String {
    let image = container["Config"]["Image"].as_str().unwrap();
    image
        .strip_prefix("localhost/")
        .unwrap_or(image)
        .to_string()
}

const WAIT: Duration = Duration::from_secs(20);
const ONLY: &str = "consul-config,consul,registrator";

/// Live applies take the host-wide lock (/run/nodeprep.lock) and a second
/// one fails at once, as it should: the tests of this binary take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A live-mode environment whose files all live in a temp dir.
pub struct Host {
    pub dir: tempfile::TempDir,
    /// Removes the test's containers when the test ends (also on panic).
    _containers: Containers,
    pub consul: String,
    pub registrator: String,
    /// This test's agent ports (http, http + 1 for DNS), so that stand-ins of
    /// different tests never share a port.
    pub port: u16,
    /// This test's link address (`[link] address`) on `lo`: the registrator
    /// stand-in pings the agent at `consul://<link>:<port>` when it starts,
    /// as registrator does, so the agent serves there too.
    pub link: LinkAddr,
    /// Last: fields drop in order, so the containers are gone before the
    /// next test takes its turn.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Host {
    pub fn new(test: &str) -> Host {
        let containers = Containers::with_prefix(&format!("nodeprep-it-{test}-"));
        let consul = containers.add("consul");
        let registrator = containers.add("registrator");
        let _turn = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(18500);
        let port = NEXT_PORT.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
        let link = LinkAddr::add(format!("169.254.77.{}", (port - 18500) / 10 + 1));
        let host = Host {
            port,
            link,
            dir: tempfile::tempdir().unwrap(),
            _containers: containers,
            consul,
            registrator,
            _turn,
        };
        host.configure("");
        host
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes the config: the test's containers and stand-in images, every
    /// path in the temp dir, plus `extra` TOML lines for [consul].
    pub fn configure(&self, extra_consul: &str) {
        self.configure_with(docker::CONSUL_IMAGE, extra_consul, "")
    }

    pub fn configure_with(&self, consul_image: &str, extra_consul: &str, extra_docker: &str) {
        self.configure_all(consul_image, extra_consul, "", extra_docker, "")
    }

    pub fn configure_all(
        &self,
        consul_image: &str,
        extra_consul: &str,
        extra_registrator: &str,
        extra_docker: &str,
        extra_tables: &str,
    ) {
        let d = self.dir.path().display();
        let text = format!(
            "[link]\naddress = \"{}/32\"\n\
             [consul]\nconfig_dir = \"{d}/consul.d\"\ndata_dir = \"{d}/data\"\nbind_addr = \"192.0.2.10\"\n\
             client_addr = \"127.0.0.1 {}\"\nhttp_port = {}\ndns_port = {}\n\
             image = \"{}\"\ncontainer = \"{}\"\n{extra_consul}\n\
             [registrator]\nimage = \"{}\"\ncontainer = \"{}\"\n{extra_registrator}\n\
             [environment]\nfile = \"{d}/environment\"\n\
             [state]\ndir = \"{d}/state\"\n\
             [docker]\n{}{extra_docker}\n{extra_tables}",
            self.link.0,
            self.link.0,
            self.port,
            self.port + 1,
            consul_image,
            self.consul,
            docker::REGISTRATOR_IMAGE,
            self.registrator,
            engine_keys(),
        );
        std::fs::write(self.path("nodeprep.toml"), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.path("nodeprep.toml"))
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// `plan`, then `apply`: the apply must do what the plan listed.
    pub fn apply(&self) -> Run {
        let plan = self.run(&["plan", "--only", ONLY]);
        let apply = self.run(&["apply", "--only", ONLY]);
        common::assert_plan_is_apply(&plan, &apply);
        apply
    }

    /// `remove --dry-run`, then `remove`, with `extra` arguments: the remove
    /// must do what the dry run listed.
    pub fn remove(&self, extra: &[&str]) -> Run {
        let args = |dry: bool| {
            let mut a = vec!["remove", "--only", ONLY];
            if dry {
                a.push("--dry-run");
            }
            a.extend_from_slice(extra);
            a
        };
        let dry = self.run(&args(true));
        let remove = self.run(&args(false));
        common::assert_plan_is_apply(&dry, &remove);
        remove
    }

    pub fn check(&self) -> Run {
        self.run(&["check", "--only", ONLY])
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        docker::inspect_container(name).unwrap_or_else(|| panic!("no container {name}"))
    }
}

/// A /32 on `lo` for the test's link address (the host has no dummy link
/// here); removed again when the test ends. Needs root, like the tests that
/// start containers; without root it is not added (those tests skip).
pub struct LinkAddr(pub String);

impl LinkAddr {
    fn add(ip: String) -> LinkAddr {
        let out = Command::new("ip")
            .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
            .output();
        if let Ok(o) = &out {
            if !o.status.success() && nix::unistd::geteuid().is_root() {
                panic!(
                    "ip addr replace {ip}/32 dev lo: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        LinkAddr(ip)
    }
}

impl Drop for LinkAddr {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .output();
    }
}

pub fn status_of(run: &Run, id: &str) -> (String, String) {
    let doc = run.json();
    let r = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {}", run.stdout))
        .clone();
    (
        r["status"].as_str().unwrap().to_string(),
        r["detail"].as_str().unwrap().to_string(),
    )
}

pub fn drifted(run: &Run) -> Vec<String> {
    run.statuses()
        .into_iter()
        .filter(|(_, s)| s == "drift")
        .map(|(id, _)| id)
        .collect()
}

pub fn fresh_apply_creates_both_and_a_second_changes_nothing() {
    let h = Host::new("fresh");
    let first = h.apply();
    first.expect_code(0);
    assert_eq!(status_of(&first, "consul").0, "changed", "{}", first.stdout);
    assert_eq!(status_of(&first, "registrator").0, "changed");
    assert_eq!(
        docker::wait_outcome(&h.consul, WAIT),
        Outcome::Ready,
        "{}",
        docker::logs(&h.consul)
    );
    assert_eq!(
        docker::wait_outcome(&h.registrator, WAIT),
        Outcome::Ready,
        "{}",
        docker::logs(&h.registrator)
    );

    let c = h.inspect(&h.consul);
    assert_eq!(c["HostConfig"]["NetworkMode"], "host");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "always");
    let d = h.dir.path().display();
    assert_eq!(
        binds(&c),
        [
            format!("{d}/consul.d:/consul/config:ro"),
            format!("{d}/data:/consul/data")
        ]
    );
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["agent"]));
    assert_eq!(c["Config"]["Labels"]["nodeprep.managed"], "true");
    assert!(c["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&"CONSUL_DISABLE_PERM_MGMT=true".into()));
    let r = h.inspect(&h.registrator);
    assert_eq!(r["HostConfig"]["NetworkMode"], "host");
    assert_eq!(r["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert_eq!(
        binds(&r),
        [format!("{}:/tmp/docker.sock", docker::socket())]
    );
    assert_eq!(
        r["Config"]["Cmd"],
        serde_json::json!([
            "-ip",
            "192.0.2.10",
            "-retry-attempts=-1",
            format!("consul://{}:{}", h.link.0, h.port)
        ])
    );

    // The data dir belongs to the image's consul user; the config dir stays root's.
    use std::os::unix::fs::MetadataExt;
    let data = std::fs::metadata(h.path("data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (100, 1000, 0o750)
    );
    let conf = std::fs::metadata(h.path("consul.d/interfaces.json")).unwrap();
    assert_eq!((conf.uid(), conf.mode() & 0o7777), (0, 0o644));

    let started = |n: &str| {
        h.inspect(n)["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = (started(&h.consul), started(&h.registrator));
    let second = h.apply();
    second.expect_code(0);
    assert_eq!(second.json()["summary"]["changed"], 0, "{}", second.stdout);
    // The report names the engine and where nodeprep found it.
    let (_, detail) = status_of(&second, "consul");
    let engine = match docker::engine() {
        docker::Engine::Docker => "on Docker ",
        docker::Engine::Podman => "on Podman ",
    };
    assert!(
        detail.contains(engine) && detail.contains(&format!("at {} (auto", docker::socket())),
        "{detail}"
    );
    assert_eq!(
        (started(&h.consul), started(&h.registrator)),
        before,
        "a converged apply restarted a container"
    );
    h.check().expect_code(0);
}

pub fn stopped_registrator_is_drift_and_apply_starts_it() {
    let h = Host::new("stopped");
    h.apply().expect_code(0);
    docker::docker_ok(&["stop", &h.registrator]);
    let check = h.check();
    check.expect_code(2);
    assert_eq!(
        drifted(&check),
        vec!["registrator".to_string()],
        "{}",
        check.stdout
    );
    let apply = h.apply();
    apply.expect_code(0);
    assert!(
        status_of(&apply, "registrator")
            .1
            .contains("start container"),
        "{}",
        apply.stdout
    );
    assert_eq!(docker::wait_outcome(&h.registrator, WAIT), Outcome::Ready);
    h.check().expect_code(0);
}

pub fn changed_image_recreates_and_removed_container_comes_back() {
    let h = Host::new("image");
    h.apply().expect_code(0);
    let id = |n: &str| h.inspect(n)["Id"].as_str().unwrap().to_string();
    let old = id(&h.consul);
    let registrator_before = id(&h.registrator);

    h.configure_with(docker::CONSUL_IMAGE_2, "", "");
    let check = h.check();
    check.expect_code(2);
    assert_eq!(
        drifted(&check),
        vec!["consul".to_string()],
        "{}",
        check.stdout
    );
    let apply = h.apply();
    apply.expect_code(0);
    assert!(
        status_of(&apply, "consul").1.contains("spec changed"),
        "{}",
        apply.stdout
    );
    assert_ne!(id(&h.consul), old, "not recreated");
    assert_eq!(image_of(&h.inspect(&h.consul)), docker::CONSUL_IMAGE_2);
    assert_eq!(
        id(&h.registrator),
        registrator_before,
        "registrator was touched"
    );
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);

    docker::docker_ok(&["rm", "-f", &h.consul]);
    h.check().expect_code(2);
    h.apply().expect_code(0);
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);
    h.check().expect_code(0);
}

pub fn cluster_setting_change_rewrites_agent_json_and_restarts_consul() {
    let h = Host::new("cluster");
    h.apply().expect_code(0);
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);
    let state = |n: &str| {
        let c = h.inspect(n);
        (
            c["Id"].as_str().unwrap().to_string(),
            c["State"]["StartedAt"].as_str().unwrap().to_string(),
        )
    };
    let (id, started) = state(&h.consul);
    let registrator_before = state(&h.registrator);

    // A loopback address: the stand-in client polls what retry_join names.
    h.configure("datacenter = \"eu-west\"\nretry_join = [\"127.0.0.1\"]\n");
    // The restart a config change causes is part of the plan.
    let plan = h.run(&["plan", "--only", ONLY]);
    plan.expect_code(2);
    assert!(
        status_of(&plan, "consul")
            .1
            .contains("would restart container"),
        "{}",
        plan.stdout
    );
    let apply = h.apply();
    apply.expect_code(0);
    assert_eq!(status_of(&apply, "consul-config").0, "changed");
    assert!(
        status_of(&apply, "consul").1.contains("restart container"),
        "{}",
        apply.stdout
    );
    let agent = std::fs::read_to_string(h.path("consul.d/agent.json")).unwrap();
    assert!(agent.contains("\"datacenter\": \"eu-west\""), "{agent}");
    let (id_after, started_after) = state(&h.consul);
    assert_eq!(id_after, id, "restarted, not recreated");
    assert_ne!(started_after, started, "consul was not restarted");
    assert_eq!(state(&h.registrator), registrator_before);
    h.check().expect_code(0);
}

pub fn gossip_key_file_is_0640_and_never_printed() {
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let h = Host::new("secret");
    h.configure(&format!("encrypt = \"{key}\"\n"));
    let plan = h.run(&["plan", "--only", "consul-config"]);
    let apply = h.run(&["apply", "--diff", "--only", ONLY]);
    apply.expect_code(0);
    for out in [&plan.stdout, &plan.stderr, &apply.stdout, &apply.stderr] {
        assert!(!out.contains(key), "secret printed:\n{out}");
    }
    assert!(apply.stdout.contains("<redacted>"), "{}", apply.stdout);
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(h.path("consul.d/agent.json")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 0, 1000));
    assert!(std::fs::read_to_string(h.path("consul.d/agent.json"))
        .unwrap()
        .contains(key));
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);
}

pub fn dockerd_unreachable_fails_the_containers_only() {
    // Needs no engine: the socket points where none answers.
    let h = Host::new("nodockerd");
    let dead = docker::refusing_socket();
    h.configure_with(
        docker::CONSUL_IMAGE,
        "",
        &format!("socket = \"{}\"\nwait_secs = 1\n", dead.path.display()),
    );
    let start = std::time::Instant::now();
    let run = h.apply();
    run.expect_code(1);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(
        status_of(&run, "consul-config").0,
        "changed",
        "{}",
        run.stdout
    );
    for id in ["consul", "registrator"] {
        let (status, detail) = status_of(&run, id);
        assert_eq!(status, "failed");
        assert!(
            detail.contains(&dead.path.display().to_string()) && detail.contains("within 1s"),
            "{detail}"
        );
    }
    // Once the files are in place, check still reports the containers as failed (1).
    h.check().expect_code(1);
}

pub fn an_unmanaged_container_is_refused_and_left_alone() {
    let h = Host::new("unmanaged");
    std::fs::create_dir_all(h.path("cfg")).unwrap();
    docker::write_interfaces_json(&h.path("cfg"), "127.0.0.1", "192.0.2.10");
    let cfg_bind = format!("{}:/consul/config", h.path("cfg").display());
    docker::docker_ok(&[
        "run",
        "-d",
        "--name",
        &h.consul,
        "--network",
        "host",
        "-v",
        &cfg_bind,
        docker::CONSUL_IMAGE,
        "agent",
    ]);
    let before = h.inspect(&h.consul)["Id"].clone();
    // No agent answers at the link address until nodeprep replaces the
    // unmanaged container: registrator (v7, and its stand-in) would exit at
    // start, but nodeprep starts it with -retry-attempts=-1.
    let run = h.apply();
    run.expect_code(1);
    let (status, detail) = status_of(&run, "consul");
    assert_eq!(status, "failed");
    assert!(
        detail.contains(&h.consul) && detail.contains("replace_unmanaged"),
        "{detail}"
    );
    assert_eq!(status_of(&run, "registrator").0, "changed");
    assert_eq!(
        h.inspect(&h.consul)["Id"],
        before,
        "the unmanaged container was touched"
    );

    h.configure("replace_unmanaged = true\n");
    h.apply().expect_code(0);
    assert_ne!(h.inspect(&h.consul)["Id"], before);
    assert_eq!(
        h.inspect(&h.consul)["Config"]["Labels"]["nodeprep.managed"],
        "true"
    );
}

pub fn an_image_that_cannot_be_pulled_is_a_clear_error() {
    let h = Host::new("nopull");
    // A registry on loopback where nothing listens: the pull fails at once
    // and no traffic leaves the machine.
    let image = "127.0.0.1:5999/nodeprep-test/absent:1";
    h.configure_with(image, "", "");
    // check never pulls: it reports what is missing.
    let check = h.check();
    check.expect_code(2);
    assert!(docker::inspect_image(image).is_none());
    let run = h.apply();
    run.expect_code(1);
    let (status, detail) = status_of(&run, "consul");
    assert_eq!(status, "failed");
    assert!(detail.contains(image), "{detail}");
    assert!(
        run.stderr.contains(image),
        "no pull progress on stderr: {}",
        run.stderr
    );
    assert!(docker::inspect_container(&h.consul).is_none());
}

pub fn a_crash_looping_registrator_is_reported_by_its_probe() {
    let h = Host::new("crashloop");
    // The stand-in exits 2 on an option real registrator does not know, so
    // under restart policy `always` it crash-loops.
    h.configure_all(
        docker::CONSUL_IMAGE,
        "",
        "args = [\"-no-such-flag\"]",
        "",
        "",
    );
    h.apply();
    assert!(matches!(
        docker::wait_outcome(&h.registrator, WAIT),
        Outcome::Restarting(_) | Outcome::Exited(_)
    ));
    let check = h.check();
    assert_ne!(check.code, 0, "{}", check.stdout);
    let probe = check.json()["probes"][0].clone();
    assert_eq!(probe["status"], "drift", "{}", check.stdout);
    let detail = probe["detail"].as_str().unwrap();
    eprintln!("registrator probe on {:?}: {detail}", docker::engine());
    assert!(
        detail.contains("crash-looping") || detail.contains("not running"),
        "{detail}"
    );
}

pub fn remove_deletes_only_labelled_containers_and_keeps_the_data_dir() {
    let h = Host::new("remove");
    h.apply().expect_code(0);
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);
    std::fs::write(h.path("data/node-state"), "kept\n").unwrap();
    let removed = h.remove(&[]);
    removed.expect_code(0);
    for id in ["consul", "registrator", "consul-config"] {
        assert_eq!(status_of(&removed, id).0, "changed", "{}", removed.stdout);
    }
    assert!(docker::inspect_container(&h.consul).is_none());
    assert!(docker::inspect_container(&h.registrator).is_none());
    assert!(!h.path("consul.d/interfaces.json").exists());
    assert!(!h.path("consul.d").exists(), "nodeprep's config dir stayed");
    assert_eq!(
        std::fs::read_to_string(h.path("data/node-state")).unwrap(),
        "kept\n",
        "the data dir went without --purge-data"
    );
    assert!(status_of(&removed, "consul").1.contains("--purge-data"));
    // Nothing left: a second remove changes nothing.
    let again = h.remove(&[]);
    again.expect_code(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);

    // A consul container nodeprep did not create is reported and left
    // running; --purge-data takes the data dir.
    docker::docker_ok(&[
        "run",
        "-d",
        "--name",
        &h.consul,
        "--network",
        "none",
        "--entrypoint",
        "/bin/consul-standin",
        docker::CONSUL_IMAGE,
        "agent",
        "-hang",
    ]);
    let before = h.inspect(&h.consul)["Id"].clone();
    let removed = h.remove(&["--purge-data"]);
    removed.expect_code(0);
    let (status, detail) = status_of(&removed, "consul");
    assert_eq!(status, "changed", "{}", removed.stdout);
    assert!(detail.contains("delete"), "{detail}");
    assert!(!h.path("data").exists(), "--purge-data kept the data dir");
    let c = h.inspect(&h.consul);
    assert_eq!(c["Id"], before, "the unmanaged container was touched");
    assert!(
        removed.stdout.contains("is not nodeprep's"),
        "{}",
        removed.stdout
    );
}

/// The consul stand-in in the local registry (tests/registry/).
pub const REGISTRY_IMAGE: &str = "127.0.0.1:5998/nodeprep-test/consul-standin:1";

/// Starts the local registry (and lets Podman use it over HTTP); false,
/// after saying why, when it cannot be had.
pub fn registry_or_skip() -> bool {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/ensure-registry.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script);
    if docker::engine() == docker::Engine::Podman {
        cmd.arg("podman");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    match out.status.code() {
        Some(0) => true,
        Some(77) => {
            common::prerequisite_missing(stderr.trim());
            false
        }
        _ => panic!("ensure-registry.sh failed ({}):\n{stderr}", out.status),
    }
}

/// Removes an image from the engine when dropped.
struct Image(&'static str);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker::docker_run(&["rmi", "-f", self.0]);
    }
}

pub fn a_missing_image_is_pulled_with_progress_and_runs() {
    if !registry_or_skip() {
        return;
    }
    let h = Host::new("pull");
    let image = Image(REGISTRY_IMAGE);
    let _ = docker::docker_run(&["rmi", "-f", image.0]);
    h.configure_with(image.0, "", "");
    // check never pulls: it reports the pull as needed.
    let check = h.check();
    check.expect_code(2);
    assert!(docker::inspect_image(image.0).is_none());
    let apply = h.apply();
    eprintln!(
        "pull on {:?}, nodeprep's stderr:\n{}",
        docker::engine(),
        apply.stderr
    );
    apply.expect_code(0);
    let (status, detail) = status_of(&apply, "consul");
    assert_eq!(status, "changed");
    assert!(detail.contains(&format!("pull {}", image.0)), "{detail}");
    assert!(
        apply
            .stderr
            .contains(&format!("nodeprep: pulling {}", image.0))
            && apply
                .stderr
                .contains(&format!("nodeprep: pulled {}", image.0)),
        "{}",
        apply.stderr
    );
    assert!(docker::inspect_image(image.0).is_some());
    assert_eq!(docker::wait_outcome(&h.consul, WAIT), Outcome::Ready);
    assert_eq!(image_of(&h.inspect(&h.consul)), image.0);
    h.check().expect_code(0);
}

/// A configuration real Consul 1.20 refuses (a key it does not know, in a
/// file an operator added to the agent's config dir): the consul stand-in
/// refuses it the same way, and the audit reports the agent down with the
/// agent's own words, so the operator sees which key. (The `consul-http`
/// probe of an agent that is not running is drift: tests/probes.rs.)
pub fn a_config_the_agent_refuses_is_reported_in_its_words() {
    let h = Host::new("refused");
    h.apply().expect_code(0);
    let extra = h.path("consul.d/zz-operator.json");
    std::fs::write(&extra, "{\"no_such_key\": true}\n").unwrap();
    std::fs::set_permissions(&extra, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    docker::docker_ok(&["restart", &h.consul]);
    // Its earlier logs still hold the ready line: wait for the restart
    // policy to have brought it back after a failed start instead.
    docker::wait_for("the agent refusing its config", WAIT, || {
        let s = docker::container_state(&h.consul)?;
        (s.restart_count > 0 && s.exit_code != 0).then_some(())
    });
    assert!(
        docker::logs(&h.consul).contains("invalid config key no_such_key"),
        "{}",
        docker::logs(&h.consul)
    );
    // Under restart policy `always` the agent is mostly waiting for its
    // next start, but may be caught in the milliseconds it runs: look again.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let check = h.check();
        assert_ne!(check.code, 0, "{}", check.stdout);
        let (status, detail) = status_of(&check, "consul");
        if status == "failed" {
            eprintln!("consul on {:?}: {detail}", docker::engine());
            assert!(detail.contains("keeps restarting"), "{detail}");
            assert!(
                detail.contains("invalid config key no_such_key"),
                "the agent's message is not in the report: {detail}"
            );
            return;
        }
        seen.push(format!("{status}: {detail}"));
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("the consul resource never reported the refused config: {seen:#?}");
}
