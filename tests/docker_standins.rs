//! Self-test of the Docker harness (tests/docker/, tests/common/docker.rs) and
//! of the TEST STAND-INS (standins/: NOT Consul, NOT registrator): each
//! stand-in stays up when started the way nodeprep must start the real
//! program, and exits with a reason otherwise (the consul stand-in refuses
//! what Consul 1.20 refuses and runs as the image's uid 100); the consul
//! stand-in answers its catalog over HTTP and DNS on every client address;
//! the registrator stand-in registers a container's published port with it
//! and deregisters it when the container stops, and exits when the agent
//! does not answer at start. Needs a Docker engine:
//! one is started when none answers; without one the tests fail under CI=true
//! and are skipped (loudly) elsewhere. The `consul_process_*` tests run the
//! stand-in as a plain process (no engine needed); the network-namespace one
//! needs root, curl and dig (same CI=true rule).
//!
//! Containers are named `nodeprep-selftest-<pid>-<n>-<what>`, host network,
//! restart policy `no` (unless the test is about restarts), removed at the
//! end of each test. All traffic goes to loopback addresses: each stand-in
//! gets its own `127.x.y.z` addresses (see [`loopback`]), so tests running at
//! once never share a port, and nothing is aimed at another host.

mod common;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/netns.rs"]
mod netns;

use docker::{Containers, Outcome};
use netns::Netns;
use serde_json::{json, Value};
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bound for a stand-in to get ready or exit: it takes well under a second;
/// the margin is for a loaded machine, and only a failing test waits it out.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// `docker run -d --name NAME --network host --restart no OPTIONS IMAGE ARGS`.
fn run(name: &str, options: &[&str], image: &str, args: &[&str]) {
    let mut cmd = vec!["run", "-d", "--name", name, "--network", "host"];
    if !options.iter().any(|o| o.starts_with("--restart")) {
        cmd.extend(["--restart", "no"]);
    }
    cmd.extend_from_slice(options);
    cmd.push(image);
    cmd.extend_from_slice(args);
    docker::docker_ok(&cmd);
}

fn volume(host: &Path, container: &str, mode: &str) -> String {
    let mut v = format!("{}:{container}", host.display());
    if !mode.is_empty() {
        v = format!("{v}:{mode}");
    }
    v
}

/// A loopback address no other test (in this or another test process)
/// uses: `127.<64 + pid/256 % 128>.<pid % 256>.<n>`. Linux routes all of
/// 127.0.0.0/8 to `lo`, so each can be bound without configuring anything,
/// and each stand-in gets the default ports to itself.
fn loopback() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    assert!(n < 255, "out of loopback addresses");
    let pid = std::process::id();
    format!("127.{}.{}.{n}", 64 + (pid >> 8) % 128, pid & 0xff)
}

/// A config dir with a valid interfaces.json and an empty data dir; the
/// stand-in serves on two fresh loopback addresses.
struct ConsulDirs {
    tmp: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    /// The two client addresses.
    client: [String; 2],
}

fn consul_dirs() -> ConsulDirs {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("consul.d");
    let data = tmp.path().join("data");
    std::fs::create_dir(&config).unwrap();
    std::fs::create_dir(&data).unwrap();
    // As nodeprep leaves it: the image's consul user (100:1000) owns it.
    docker::give_to_consul_user(&data);
    let client = [loopback(), loopback()];
    docker::write_interfaces_json(&config, &client.join(" "), "192.0.2.10");
    ConsulDirs {
        tmp,
        config,
        data,
        client,
    }
}

impl ConsulDirs {
    fn client_addr(&self) -> String {
        self.client.join(" ")
    }

    /// Adds a config file beside interfaces.json.
    fn write(&self, name: &str, value: Value) {
        std::fs::write(self.config.join(name), value.to_string()).unwrap();
    }

    /// nodeprep's agent.json for `role = "server"`, `bootstrap_expect = 1`
    /// (plus `extra` keys): a single-server cluster, its own leader.
    fn single_server(&self, extra: Value) {
        let mut v = json!({"datacenter": "dc1", "server": true, "bootstrap_expect": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        self.write("agent.json", v);
    }
}

fn assert_exited(name: &str, code: i64, message: &str) {
    let outcome = docker::wait_outcome(name, OUTCOME_TIMEOUT);
    let logs = docker::logs(name);
    assert_eq!(outcome, Outcome::Exited(code), "{name}; logs:\n{logs}");
    assert!(
        logs.contains(docker::ERROR_MARK) && logs.contains(message),
        "{name}: expected an error line containing {message:?}; logs:\n{logs}"
    );
    assert!(
        logs.contains("stand-in"),
        "{name}: banner missing; logs:\n{logs}"
    );
}

fn assert_ready(name: &str) {
    let outcome = docker::wait_outcome(name, OUTCOME_TIMEOUT);
    assert_eq!(
        outcome,
        Outcome::Ready,
        "{name}; logs:\n{}",
        docker::logs(name)
    );
}

/// `docker stop` (10 s grace) must return promptly: SIGTERM is handled even
/// though the stand-in is PID 1. Returns how long it took.
fn assert_stops_promptly(name: &str) -> Duration {
    let t = Instant::now();
    docker::docker_ok(&["stop", "-t", "10", name]);
    let took = t.elapsed();
    let state = docker::container_state(name).unwrap();
    assert_eq!(
        (state.status.as_str(), state.exit_code),
        ("exited", 0),
        "{name}; logs:\n{}",
        docker::logs(name)
    );
    assert!(
        took < Duration::from_secs(5),
        "docker stop {name} took {took:?}: SIGTERM not handled?"
    );
    assert!(docker::logs(name).contains("got SIGTERM"));
    took
}

#[test]
fn images_look_like_the_real_ones() {
    if !docker::docker_or_skip() {
        return;
    }
    let consul = docker::inspect_image(docker::CONSUL_IMAGE).unwrap();
    assert_eq!(
        consul["Config"]["Entrypoint"],
        serde_json::json!(["/bin/consul-standin"])
    );
    assert_eq!(
        consul["Config"]["Cmd"],
        serde_json::json!(["agent", "-dev", "-client", "0.0.0.0"])
    );
    assert!(consul["Config"]["Volumes"]["/consul/data"].is_object());
    // The real image's agent runs as its consul user.
    assert_eq!(consul["Config"]["User"], "100:1000");
    assert_ne!(
        docker::image_id(docker::CONSUL_IMAGE),
        docker::image_id(docker::CONSUL_IMAGE_2),
        "the two consul stand-in tags must be different images"
    );
    let registrator = docker::inspect_image(docker::REGISTRATOR_IMAGE).unwrap();
    assert_eq!(
        registrator["Config"]["Entrypoint"],
        serde_json::json!(["/bin/registrator-standin"])
    );
    assert!(registrator["Config"]["Cmd"].is_null());
    let workload = docker::inspect_image(docker::WORKLOAD_IMAGE).unwrap();
    assert!(workload["Config"]["ExposedPorts"].is_null());
    for image in [
        docker::CONSUL_IMAGE,
        docker::CONSUL_IMAGE_2,
        docker::REGISTRATOR_IMAGE,
        docker::WORKLOAD_IMAGE,
    ] {
        let v = docker::inspect_image(image).unwrap();
        let label = v["Config"]["Labels"]["org.nodeprep.standin"]
            .as_str()
            .unwrap();
        assert!(label.contains("NOT the real program"), "{image}: {label}");
    }
    assert!(docker::inspect_image("nodeprep-test/no-such-image:0").is_none());
    assert!(docker::inspect_container("nodeprep-selftest-no-such-container").is_none());
}

#[test]
fn consul_refuses_the_image_default_dev_command_and_other_commands() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dev = c.add("consul-default-cmd");
    let other = c.add("consul-members");
    run(&dev, &[], docker::CONSUL_IMAGE, &[]);
    run(&other, &[], docker::CONSUL_IMAGE, &["members"]);
    assert_exited(
        &dev,
        2,
        "stand-in refuses dev mode: nodeprep must pass an explicit agent command",
    );
    assert_exited(&other, 2, "runs only `agent`");
}

#[test]
fn consul_runs_with_config_and_data_mounted_and_stops_promptly() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dirs = consul_dirs();
    let name = c.add("consul-ok");
    let cfg = volume(&dirs.config, "/consul/config", "ro");
    let data = volume(&dirs.data, "/consul/data", "");
    let t = Instant::now();
    run(
        &name,
        &["-v", &cfg, "-v", &data],
        docker::CONSUL_IMAGE,
        &["agent", "-server"],
    );
    assert_ready(&name);
    eprintln!("consul stand-in ready {:?} after docker run", t.elapsed());
    let logs = docker::logs(&name);
    let [a, b] = &dirs.client;
    assert!(
        logs.contains(&format!(
            r#"client_addr="{}" bind_addr="192.0.2.10""#,
            dirs.client_addr()
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(" http={a}:8500,{b}:8500 dns={a}:8600,{b}:8600")),
        "{logs}"
    );

    let node_id = std::fs::read_to_string(dirs.data.join("node-id")).unwrap();
    assert_eq!(node_id.len(), 36, "node-id {node_id:?}");
    assert!(logs.contains(&format!("node_id={node_id}")), "{logs}");

    eprintln!("docker stop took {:?}", assert_stops_promptly(&name));

    // A restarted agent keeps its node id.
    docker::docker_ok(&["start", &name]);
    let deadline = Instant::now() + OUTCOME_TIMEOUT;
    while docker::logs(&name).matches(docker::READY_MARK).count() < 2 {
        assert!(Instant::now() < deadline, "{}", docker::logs(&name));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(dirs.data.join("node-id")).unwrap(),
        node_id
    );
    assert_stops_promptly(&name);
}

#[test]
fn consul_takes_explicit_config_and_data_dirs() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dirs = consul_dirs();
    let name = c.add("consul-dirs");
    let cfg = volume(&dirs.config, "/etc/somewhere", "ro");
    let data = volume(&dirs.data, "/var/lib/elsewhere", "");
    run(
        &name,
        &["-v", &cfg, "-v", &data],
        docker::CONSUL_IMAGE_2,
        &[
            "agent",
            "-config-dir=/etc/somewhere",
            "-data-dir",
            "/var/lib/elsewhere",
        ],
    );
    assert_ready(&name);
    assert!(dirs.data.join("node-id").is_file());
    assert_stops_promptly(&name);
}

#[test]
fn consul_exits_1_on_a_missing_or_broken_config_or_an_unwritable_data_dir() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();

    // The image's own /consul/config is empty.
    let no_config = c.add("consul-no-config");
    run(&no_config, &[], docker::CONSUL_IMAGE, &["agent"]);

    let broken_json = consul_dirs();
    std::fs::write(broken_json.config.join("extra.json"), "{\"datacenter\": ").unwrap();
    let broken = c.add("consul-broken-json");
    run(
        &broken,
        &["-v", &volume(&broken_json.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent"],
    );

    let no_bind = consul_dirs();
    std::fs::write(
        no_bind.config.join("interfaces.json"),
        r#"{"client_addr": "127.0.0.1 169.254.1.1"}"#,
    )
    .unwrap();
    let missing_field = c.add("consul-no-bind-addr");
    run(
        &missing_field,
        &["-v", &volume(&no_bind.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent"],
    );

    let ro = consul_dirs();
    let read_only = c.add("consul-ro-data");
    run(
        &read_only,
        &[
            "-v",
            &volume(&ro.config, "/consul/config", "ro"),
            "-v",
            &volume(&ro.data, "/consul/data", "ro"),
        ],
        docker::CONSUL_IMAGE,
        &["agent"],
    );

    assert_exited(&no_config, 1, "/consul/config/interfaces.json is missing");
    assert_exited(&broken, 1, "failed to parse /consul/config/extra.json: EOF");
    assert_exited(&missing_field, 1, "bind_addr is missing");
    assert_exited(&read_only, 1, "data dir /consul/data is not writable");
    assert!(!ro.data.join("node-id").exists());
}

#[test]
fn consul_refuses_what_consul_1_20_refuses() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    // (what, file name, content, message)
    #[rustfmt::skip]
    let cases = [
        ("unknown-key", "extra.json", r#"{"datacenter": "dc1", "bogus_key": true}"#,
         "failed to parse /consul/config/extra.json: 1 error occurred: * invalid config key bogus_key"),
        ("unknown-port", "agent.json", r#"{"ports": {"http": 8500, "htpps": 1}}"#,
         "invalid config key ports.htpps"),
        ("wrong-type", "agent.json", r#"{"server": "yes"}"#,
         "'server' expected type 'bool', got unconvertible type 'string', value: 'yes'"),
        ("expect-on-client", "agent.json", r#"{"datacenter": "dc1", "bootstrap_expect": 1}"#,
         "'bootstrap_expect > 0' requires 'server = true'"),
        ("bad-encrypt", "agent.json", r#"{"encrypt": "not a gossip key"}"#,
         "encrypt has invalid key: illegal base64 data at input byte 3"),
    ];
    let mut started = Vec::new();
    for (what, file, content, message) in cases {
        let dirs = consul_dirs();
        std::fs::write(dirs.config.join(file), content).unwrap();
        let name = c.add(&format!("consul-{what}"));
        run(
            &name,
            &[
                "-v",
                &volume(&dirs.config, "/consul/config", "ro"),
                "-v",
                &volume(&dirs.data, "/consul/data", ""),
            ],
            docker::CONSUL_IMAGE,
            &["agent"],
        );
        started.push((name, message, dirs));
    }
    // A secret the consul user cannot read (nodeprep makes agent.json
    // root:1000 0640; root:root 0600 shuts the agent out).
    use std::os::unix::fs::PermissionsExt;
    let dirs = consul_dirs();
    let secret = dirs.config.join("agent.json");
    std::fs::write(
        &secret,
        r#"{"encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="}"#,
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let name = c.add("consul-unreadable");
    run(
        &name,
        &[
            "-v",
            &volume(&dirs.config, "/consul/config", "ro"),
            "-v",
            &volume(&dirs.data, "/consul/data", ""),
        ],
        docker::CONSUL_IMAGE,
        &["agent"],
    );
    started.push((
        name,
        "config: failed to read /consul/config/agent.json: Permission denied",
        dirs,
    ));
    for (name, message, _dirs) in &started {
        assert_exited(name, 1, message);
    }
}

#[test]
fn consul_runs_as_the_images_consul_user_and_reads_nodeprep_files() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dirs = consul_dirs();
    // nodeprep's files: interfaces.json root:root 0644, the secret
    // agent.json root:1000 0640.
    use std::os::unix::fs::PermissionsExt;
    dirs.single_server(json!({"encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="}));
    let secret = dirs.config.join("agent.json");
    std::os::unix::fs::chown(&secret, Some(0), Some(docker::CONSUL_GID)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let name = c.add("consul-uid");
    run(
        &name,
        &[
            "-v",
            &volume(&dirs.config, "/consul/config", "ro"),
            "-v",
            &volume(&dirs.data, "/consul/data", ""),
        ],
        docker::CONSUL_IMAGE,
        &["agent"],
    );
    assert_ready(&name);
    assert_eq!(
        docker::container_ids(&name),
        (docker::CONSUL_UID, docker::CONSUL_GID),
        "{}",
        docker::logs(&name)
    );
    assert!(
        docker::logs(&name).contains(" uid=100 gid=1000 "),
        "{}",
        docker::logs(&name)
    );
    use std::os::unix::fs::MetadataExt;
    let node_id = std::fs::metadata(dirs.data.join("node-id")).unwrap();
    assert_eq!(
        (node_id.uid(), node_id.gid()),
        (docker::CONSUL_UID, docker::CONSUL_GID)
    );
    assert_stops_promptly(&name);

    // A data dir left to root (0755): the consul user cannot write it.
    let root_owned = consul_dirs();
    std::os::unix::fs::chown(&root_owned.data, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&root_owned.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = c.add("consul-root-data");
    run(
        &name,
        &[
            "-v",
            &volume(&root_owned.config, "/consul/config", "ro"),
            "-v",
            &volume(&root_owned.data, "/consul/data", ""),
        ],
        docker::CONSUL_IMAGE,
        &["agent"],
    );
    assert_exited(
        &name,
        1,
        "data dir /consul/data is not writable (write node-id: Permission denied",
    );
    assert!(
        docker::logs(&name).contains("runs as uid 100 gid 1000"),
        "{}",
        docker::logs(&name)
    );
}

#[test]
fn consul_broken_config_under_restart_always_keeps_restarting() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let name = c.add("consul-restart-loop");
    run(
        &name,
        &["--restart", "always"],
        docker::CONSUL_IMAGE,
        &["agent"],
    );
    match docker::wait_outcome(&name, OUTCOME_TIMEOUT) {
        Outcome::Restarting(n) => assert!(n >= 1),
        other => panic!(
            "expected a restart loop, got {other:?}: {}",
            docker::logs(&name)
        ),
    }
}

/// A consul stand-in container that is a single server (its own leader)
/// on two fresh loopback addresses, default ports; its dirs.
fn start_consul_server(c: &Containers, what: &str) -> (String, ConsulDirs) {
    let dirs = consul_dirs();
    dirs.single_server(json!({"node_name": "standin-node"}));
    let name = c.add(what);
    run(
        &name,
        &[
            "-v",
            &volume(&dirs.config, "/consul/config", "ro"),
            "-v",
            &volume(&dirs.data, "/consul/data", ""),
        ],
        docker::CONSUL_IMAGE,
        &["agent"],
    );
    assert_ready(&name);
    (name, dirs)
}

#[test]
fn registrator_runs_with_the_docker_socket_ip_and_consul_uri() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let (_consul, dirs) = start_consul_server(&c, "consul-for-registrator");
    let uri = format!("consul://{}:8500", dirs.client[0]);
    let name = c.add("registrator-ok");
    let sock = format!("{}:/tmp/docker.sock", docker::DOCKER_SOCKET);
    run(
        &name,
        &["-v", &sock],
        docker::REGISTRATOR_IMAGE,
        &["-ip", "192.0.2.10", "-resync=30", &uri],
    );
    assert_ready(&name);
    let logs = docker::logs(&name);
    assert!(
        logs.contains(&format!("ip=192.0.2.10 registry={uri}")),
        "{logs}"
    );
    // v7's start: it pings the agent, names the leader, then syncs.
    assert!(logs.contains("Connecting to backend (0/0)"), "{logs}");
    assert!(logs.contains(r#"leader="192.0.2.10:8300""#), "{logs}");
    assert!(logs.contains("Listening for Docker events ..."), "{logs}");
    assert_stops_promptly(&name);
}

#[test]
fn registrator_registers_a_published_port_and_deregisters_it_when_the_container_stops() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let (consul, dirs) = start_consul_server(&c, "consul-catalog");
    let api = format!("{}:8500", dirs.client[0]);
    let dns = &dirs.client[1];
    let registrator = c.add("registrator-catalog");
    let sock = format!("{}:/tmp/docker.sock", docker::DOCKER_SOCKET);
    run(
        &registrator,
        &["-v", &sock],
        docker::REGISTRATOR_IMAGE,
        &["-ip", "192.0.2.10", &format!("consul://{api}")],
    );
    assert_ready(&registrator);
    // Host networking with a published port, as registrator's docs say to
    // do it (the port is not bound: host networking ignores -p, registrator
    // reads HostConfig.PortBindings).
    let web = c.add("web");
    let t = Instant::now();
    run(
        &web,
        &[
            "-p",
            "18080:8080",
            "-e",
            "SERVICE_NAME=web",
            "-e",
            "SERVICE_TAGS=blue,v2",
        ],
        docker::WORKLOAD_IMAGE,
        &[],
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let id = format!("{}:{web}:8080", hostname.trim());
    let entry = docker::wait_for("web in the catalog", Duration::from_secs(10), || {
        let v = get_json(&api, "/v1/catalog/service/web");
        v.as_array().and_then(|a| a.first().cloned())
    });
    eprintln!("registered {:?} after docker run", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(entry["ServiceID"], id.as_str(), "{entry}");
    assert_eq!(entry["ServiceAddress"], "192.0.2.10");
    assert_eq!(entry["ServicePort"], 18080);
    assert_eq!(entry["ServiceTags"], json!(["blue", "v2"]));
    assert_eq!(entry["Node"], "standin-node");
    assert_eq!(
        get_json(&api, "/v1/health/service/web?passing")[0]["Service"]["ID"],
        id.as_str()
    );
    assert_eq!(dig_short(dns, 8600, "web.service.consul"), ["192.0.2.10"]);
    assert_eq!(
        dig_short(dns, 8600, "blue.web.service.consul"),
        ["192.0.2.10"]
    );
    let (_, srv) = dig(dns, 8600, "web.service.consul", &["SRV", "+short"]);
    assert_eq!(srv.trim(), "1 1 18080 standin-node.node.dc1.consul.");
    // consul and registrator themselves run with host networking and no
    // published port: nothing registered for them.
    let services = get_json(&api, "/v1/catalog/services");
    assert_eq!(services["web"], json!(["blue", "v2"]), "{services}");
    assert_eq!(services["consul"], json!([]), "{services}");
    for image_name in ["consul-standin", "registrator-standin"] {
        assert!(
            services.get(image_name).is_none(),
            "{image_name} registered: {services}; {}",
            docker::logs(&registrator)
        );
    }
    let logs = docker::logs(&registrator);
    assert!(logs.contains("added: ") && logs.contains(&id), "{logs}");

    let t = Instant::now();
    docker::docker_ok(&["stop", "-t", "10", &web]);
    docker::wait_for("web deregistered", Duration::from_secs(10), || {
        (get_json(&api, "/v1/catalog/service/web") == json!([])).then_some(())
    });
    eprintln!("deregistered {:?} after docker stop", t.elapsed());
    let (_, out) = dig(dns, 8600, "web.service.consul", &[]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        docker::logs(&registrator).contains("removed: "),
        "{}",
        docker::logs(&registrator)
    );

    // Started again: registered again (a `start` event).
    docker::docker_ok(&["start", &web]);
    docker::wait_for("web registered again", Duration::from_secs(10), || {
        get_json(&api, "/v1/catalog/service/web")
            .as_array()
            .and_then(|a| a.first().cloned())
    });
    assert_stops_promptly(&registrator);
    assert_stops_promptly(&consul);
}

#[test]
fn registrator_exits_without_a_usable_socket_or_with_wrong_arguments() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let sock = format!("{}:/tmp/docker.sock", docker::DOCKER_SOCKET);
    let good = ["-ip", "192.0.2.10", "consul://169.254.1.1:8500"];
    // Nothing listens there: the ping at start fails.
    let silent = format!("{}:8500", loopback());
    let silent_uri = format!("consul://{silent}");
    let refused = format!(
        "Get \"http://{silent}/v1/status/leader\": dial tcp {silent}: connect: connection refused"
    );

    let not_a_socket = tempfile::NamedTempFile::new().unwrap();
    let file_mount = volume(not_a_socket.path(), "/tmp/docker.sock", "");
    let dead = docker::refusing_socket();
    let dead_mount = volume(&dead.path, "/tmp/docker.sock", "");

    // (what, docker run options, stand-in args, exit code, message)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>, i64, &'a str);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("no-socket", vec![], good.to_vec(), 1, "/tmp/docker.sock: No such file"),
        ("file-socket", vec!["-v", &file_mount], good.to_vec(), 1, "exists but is not a socket"),
        ("dead-socket", vec!["-v", &dead_mount], good.to_vec(), 1, "Connection refused"),
        ("no-consul", vec!["-v", &sock], vec!["-ip", "192.0.2.10", &silent_uri], 1, &refused),
        ("no-args", vec!["-v", &sock], vec![], 2, "Missing required argument for registry URI"),
        ("no-ip", vec!["-v", &sock], vec!["consul://169.254.1.1:8500"], 1, "-ip <IPv4> is missing"),
        ("ip-after-uri", vec!["-v", &sock], vec!["consul://169.254.1.1:8500", "-ip", "192.0.2.10"], 2, "Extra unparsed arguments"),
        ("ipv6", vec!["-v", &sock], vec!["-ip", "2001:db8::1", "consul://169.254.1.1:8500"], 1, "is not an IPv4 address"),
        ("etcd-uri", vec!["-v", &sock], vec!["-ip", "192.0.2.10", "etcd://127.0.0.1:2379"], 1, "unrecognized adapter: etcd://127.0.0.1:2379"),
        ("unknown-flag", vec!["-v", &sock], vec!["-bogus", "-ip", "192.0.2.10", "consul://169.254.1.1:8500"], 2, "flag provided but not defined: -bogus"),
    ];
    // Start them all, then collect: the checks take milliseconds each, the
    // container starts are what costs.
    let names: Vec<String> = cases
        .iter()
        .map(|(what, options, args, _, _)| {
            let name = c.add(&format!("registrator-{what}"));
            run(&name, options, docker::REGISTRATOR_IMAGE, args);
            name
        })
        .collect();
    for (name, (_, _, _, code, message)) in names.iter().zip(&cases) {
        assert_exited(name, *code, message);
    }
    // v7's backend loop: one try by default.
    let logs = docker::logs(&names[3]);
    assert_eq!(logs.matches("Connecting to backend").count(), 1, "{logs}");
}

#[test]
fn dead_socket_helpers_do_not_answer() {
    use std::io::ErrorKind;
    use std::os::unix::net::UnixStream;
    let missing = docker::missing_socket();
    let err = UnixStream::connect(&missing.path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let refusing = docker::refusing_socket();
    let err = UnixStream::connect(&refusing.path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // The docker CLI reports it as an unreachable engine, quickly.
    let t = Instant::now();
    let out = std::process::Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", refusing.path.display()))
        .arg("version")
        .output();
    if let Ok(out) = out {
        assert!(!out.status.success());
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------
// The consul stand-in's HTTP API and DNS (a TEST STAND-IN, NOT Consul).

/// One HTTP/1.1 request over a plain TcpStream; (status, body). The
/// stand-in closes the connection after each answer.
fn http(addr: &str, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains("X-Consul-Standin: test stand-in, NOT Consul"),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{text:?}");
    (status, body.to_string())
}

fn get_json(addr: &str, target: &str) -> Value {
    let (status, body) = http(addr, "GET", target, "");
    assert_eq!(status, 200, "GET {target} on {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {target}: {e}: {body}"))
}

/// `dig @server -p port NAME ARGS`, one try with a deadline; (exit code,
/// stdout). The real DNS client sends EDNS with a cookie, as resolvers do.
fn dig(server: &str, port: u16, name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string(), name, "+time=1", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dig (apt-get install bind9-dnsutils): {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The A records dig got for NAME (`+short`), or panics on a dig failure.
fn dig_short(server: &str, port: u16, name: &str) -> Vec<String> {
    let (code, out) = dig(server, port, name, &["+short"]);
    assert_eq!(code, 0, "dig @{server} -p {port} {name}: {out}");
    out.lines().map(str::to_string).collect()
}

/// The record file's lines, parsed.
fn record_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The HTTP lines of a record file as "METHOD path?query -> status" and the
/// DNS lines as "DNS name TYPE -> rcode answers".
fn record_summary(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l["proto"].as_str() {
            Some("http") => format!(
                "{} {}{}{} -> {}",
                l["method"].as_str().unwrap(),
                l["path"].as_str().unwrap(),
                if l["query"] == "" { "" } else { "?" },
                l["query"].as_str().unwrap(),
                l["status"]
            ),
            Some("dns") => format!(
                "DNS {} {} -> {} {}",
                l["name"].as_str().unwrap(),
                l["qtype"].as_str().unwrap(),
                l["rcode"],
                l["answers"]
            ),
            _ => panic!("unexpected record line {l}"),
        })
        .collect()
}

/// Exercises the whole API and DNS of a stand-in serving `addrs` (its
/// bind_addr 192.0.2.10, node `node`, datacenter `dc`, a single server, so
/// its own leader), with `record` its -record file. Used for a container and
/// a plain process.
fn exercise_api_and_dns(
    addrs: &[String],
    http_port: u16,
    dns_port: u16,
    node: &str,
    dc: &str,
    record: &Path,
) {
    // Every client address answers the same agent.
    for ip in addrs {
        let addr = format!("{ip}:{http_port}");
        let me = get_json(&addr, "/v1/agent/self");
        assert_eq!(me["Config"]["NodeName"], node, "{me}");
        assert_eq!(me["Config"]["Datacenter"], dc, "{me}");
        assert_eq!(me["Config"]["Server"], true, "{me}");
        assert_eq!(me["Member"]["Addr"], "192.0.2.10", "{me}");
        assert!(me["StandIn"].as_str().unwrap().contains("NOT Consul"));
        assert_eq!(
            get_json(&addr, "/v1/status/leader"),
            json!("192.0.2.10:8300")
        );
    }
    let a = format!("{}:{http_port}", addrs[0]);
    let b = format!("{}:{http_port}", addrs[addrs.len() - 1]);

    // Checks: what nodeprep's --report-consul does, across both addresses
    // (one agent, one set of checks).
    assert_eq!(get_json(&a, "/v1/agent/checks"), json!({}));
    let register = r#"{"ID":"nodeprep","Name":"nodeprep","TTL":"7200s","Notes":"nodeprep check --report-consul"}"#;
    assert_eq!(
        http(&a, "PUT", "/v1/agent/check/register", register),
        (200, String::new())
    );
    assert_eq!(
        get_json(&b, "/v1/agent/checks"),
        json!({"nodeprep": {
            "Node": node, "CheckID": "nodeprep", "Name": "nodeprep", "Status": "critical",
            "Notes": "nodeprep check --report-consul", "Output": "",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "ttl"}})
    );
    let update = r#"{"Status":"passing","Output":"9 ok"}"#;
    assert_eq!(
        http(&b, "PUT", "/v1/agent/check/update/nodeprep", update).0,
        200
    );
    let (status, body) = http(
        &a,
        "PUT",
        "/v1/agent/check/update/nodeprep",
        r#"{"Status":"fine"}"#,
    );
    assert_eq!(
        (status, body.trim()),
        (400, r#"Invalid check status: "fine""#)
    );
    let (status, body) = http(&a, "PUT", "/v1/agent/check/update/other", update);
    assert_eq!(status, 404);
    assert!(body.starts_with(r#"Unknown check ID "other""#), "{body}");
    let checks = get_json(&a, "/v1/agent/checks");
    assert_eq!(
        (&checks["nodeprep"]["Status"], &checks["nodeprep"]["Output"]),
        (&json!("passing"), &json!("9 ok"))
    );
    // CheckID (defaulting to Name), warn/fail/pass with ?note=.
    let second = r#"{"CheckID":"disk","Name":"disk space","TTL":"30s"}"#;
    assert_eq!(http(&a, "PUT", "/v1/agent/check/register", second).0, 200);
    assert_eq!(
        http(
            &a,
            "PUT",
            "/v1/agent/check/register",
            r#"{"Name":"by-name","TTL":"1m"}"#
        )
        .0,
        200
    );
    assert_eq!(
        http(&a, "PUT", "/v1/agent/check/warn/disk?note=81%25+used", "").0,
        200
    );
    assert_eq!(http(&a, "PUT", "/v1/agent/check/fail/by-name", "").0, 200);
    assert_eq!(
        http(&a, "PUT", "/v1/agent/check/pass/nodeprep?note=all+good", "").0,
        200
    );
    assert_eq!(http(&a, "PUT", "/v1/agent/check/pass/nope", "").0, 404);
    let checks = get_json(&b, "/v1/agent/checks");
    let states: Vec<(String, String, String)> = checks
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                c["Status"].as_str().unwrap().to_string(),
                c["Output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("by-name", "critical", ""),
        ("disk", "warning", "81% used"),
        ("nodeprep", "passing", "all good"),
    ];
    assert_eq!(
        states,
        expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    assert_eq!(checks["disk"]["Name"], "disk space");
    // Anything else: 404; a known path with another method: 405.
    assert_eq!(http(&a, "GET", "/v1/agent/selfish", "").0, 404);
    assert_eq!(http(&a, "GET", "/v1/kv/x", "").0, 404);
    assert_eq!(
        http(&a, "POST", "/v1/agent/check/register", register).0,
        405
    );

    // Services, as registrator registers them; the catalog and health views.
    let web = r#"{"ID":"web-1","Name":"web","Tags":["v1"],"Port":8080}"#;
    let db = r#"{"Name":"db","Address":"192.0.2.99","Port":5432,"Check":{"TTL":"1h","Status":"passing"}}"#;
    assert_eq!(
        http(&a, "PUT", "/v1/agent/service/register", web),
        (200, String::new())
    );
    assert_eq!(http(&b, "PUT", "/v1/agent/service/register", db).0, 200);
    assert_eq!(
        get_json(&b, "/v1/catalog/services"),
        json!({"consul": [], "db": [], "web": ["v1"]})
    );
    let entry = &get_json(&a, "/v1/catalog/service/web")[0];
    for (k, v) in [
        ("Node", json!(node)),
        ("Address", json!("192.0.2.10")),
        ("Datacenter", json!(dc)),
        ("ServiceID", json!("web-1")),
        ("ServiceName", json!("web")),
        ("ServiceAddress", json!("")),
        ("ServicePort", json!(8080)),
        ("ServiceTags", json!(["v1"])),
    ] {
        assert_eq!(entry[k], v, "{k}: {entry}");
    }
    assert_eq!(
        get_json(&a, "/v1/agent/services")["db"]["Address"],
        "192.0.2.99"
    );
    // The critical node check "by-name" counts for every service of the
    // node: none passes, and DNS leaves them all out (Consul's rule).
    assert_eq!(get_json(&a, "/v1/health/service/web?passing"), json!([]));
    let health = get_json(&a, "/v1/health/service/db");
    let ids: Vec<&str> = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["serfHealth", "by-name", "disk", "nodeprep", "service:db"]
    );
    let (_, out) = dig(&addrs[0], dns_port, "web.service.consul", &[]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert_eq!(
        http(&a, "PUT", "/v1/agent/check/deregister/by-name", "").0,
        200
    );
    // A warning node check still lets them through DNS, not ?passing.
    assert_eq!(get_json(&a, "/v1/health/service/db?passing"), json!([]));
    assert_eq!(
        get_json(&a, "/v1/health/service/db")
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // DNS on every client address, through a real client (dig).
    for ip in addrs {
        assert_eq!(
            dig_short(ip, dns_port, "web.service.consul"),
            ["192.0.2.10"],
            "no service address: the node's"
        );
        assert_eq!(
            dig_short(ip, dns_port, &format!("{node}.node.consul")),
            ["192.0.2.10"]
        );
        // A server: Consul's leader registers the consul service for it.
        assert_eq!(
            dig_short(ip, dns_port, "consul.service.consul"),
            ["192.0.2.10"]
        );
    }
    let ip = &addrs[0];
    assert_eq!(dig_short(ip, dns_port, "db.service.consul"), ["192.0.2.99"]);
    assert_eq!(
        dig_short(ip, dns_port, "V1.Web.Service.Consul."),
        ["192.0.2.10"]
    );
    assert_eq!(
        dig_short(ip, dns_port, &format!("web.service.{dc}.consul")),
        ["192.0.2.10"]
    );
    let (code, out) = dig(ip, dns_port, "_web._tcp.service.consul", &["SRV", "+short"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("1 1 8080 {node}.node.{dc}.consul."));
    // The full SRV answer: the target's A record in the additional section.
    let (_, out) = dig(ip, dns_port, "db.service.consul", &["SRV"]);
    assert!(
        out.contains("ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1"),
        "{out}"
    );
    let extra: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("ADDITIONAL SECTION"))
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let target = format!("c0000263.addr.{dc}.consul.");
    assert_eq!(
        extra,
        [target.as_str(), "0", "IN", "A", "192.0.2.99"],
        "{out}"
    );
    // The full A answer: authoritative, TTL 0, the question echoed.
    let (code, out) = dig(ip, dns_port, "web.service.consul", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("flags: qr aa rd;"), "{out}");
    assert!(out.contains("QUERY: 1, ANSWER: 1,"), "{out}");
    let answer: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("ANSWER SECTION"))
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        answer,
        ["web.service.consul.", "0", "IN", "A", "192.0.2.10"],
        "{out}"
    );
    // Not registered, not served: NXDOMAIN. A name that exists asked for
    // AAAA: NODATA.
    for name in [
        "nope.service.consul",
        "v2.web.service.consul",
        "web.query.consul",
        "other-node.node.consul",
        "example.com",
        "web.service.dc9.consul",
    ] {
        let (code, out) = dig(ip, dns_port, name, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("status: NXDOMAIN"), "{name}: {out}");
    }
    let (_, out) = dig(ip, dns_port, "web.service.consul", &["AAAA"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0,"),
        "{out}"
    );
    // Without EDNS too.
    let (_, out) = dig(ip, dns_port, "web.service.consul", &["+noedns", "+short"]);
    assert_eq!(out.trim(), "192.0.2.10");
    // Deregistered: gone from the catalog and DNS.
    assert_eq!(
        http(&a, "PUT", "/v1/agent/service/deregister/web-1", "").0,
        200
    );
    assert_eq!(get_json(&b, "/v1/catalog/service/web"), json!([]));
    let (_, out) = dig(ip, dns_port, "web.service.consul", &[]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");

    // The record file: every request, in order, as made.
    let lines = record_lines(record);
    let first_put = lines.iter().find(|l| l["method"] == "PUT").unwrap();
    assert_eq!(first_put["body"], register);
    assert_eq!(first_put["local"], a);
    let summary = record_summary(&lines);
    let mut expected: Vec<String> = Vec::new();
    for _ in addrs {
        expected.push("GET /v1/agent/self -> 200".into());
        expected.push("GET /v1/status/leader -> 200".into());
    }
    expected.extend(
        [
            "GET /v1/agent/checks -> 200",
            "PUT /v1/agent/check/register -> 200",
            "GET /v1/agent/checks -> 200",
            "PUT /v1/agent/check/update/nodeprep -> 200",
            "PUT /v1/agent/check/update/nodeprep -> 400",
            "PUT /v1/agent/check/update/other -> 404",
            "GET /v1/agent/checks -> 200",
            "PUT /v1/agent/check/register -> 200",
            "PUT /v1/agent/check/register -> 200",
            "PUT /v1/agent/check/warn/disk?note=81%25+used -> 200",
            "PUT /v1/agent/check/fail/by-name -> 200",
            "PUT /v1/agent/check/pass/nodeprep?note=all+good -> 200",
            "PUT /v1/agent/check/pass/nope -> 404",
            "GET /v1/agent/checks -> 200",
            "GET /v1/agent/selfish -> 404",
            "GET /v1/kv/x -> 404",
            "POST /v1/agent/check/register -> 405",
            "PUT /v1/agent/service/register -> 200",
            "PUT /v1/agent/service/register -> 200",
            "GET /v1/catalog/services -> 200",
            "GET /v1/catalog/service/web -> 200",
            "GET /v1/agent/services -> 200",
            "GET /v1/health/service/web?passing -> 200",
            "GET /v1/health/service/db -> 200",
            "PUT /v1/agent/check/deregister/by-name -> 200",
            "GET /v1/health/service/db?passing -> 200",
            "GET /v1/health/service/db -> 200",
            "PUT /v1/agent/service/deregister/web-1 -> 200",
            "GET /v1/catalog/service/web -> 200",
        ]
        .map(String::from),
    );
    let http_lines: Vec<String> = summary
        .iter()
        .filter(|l| !l.starts_with("DNS "))
        .cloned()
        .collect();
    assert_eq!(http_lines, expected);
    let dns_lines: Vec<&String> = summary.iter().filter(|l| l.starts_with("DNS ")).collect();
    assert_eq!(dns_lines[0], "DNS web.service.consul. A -> 3 []");
    assert_eq!(
        dns_lines[1],
        r#"DNS web.service.consul. A -> 0 ["192.0.2.10"]"#
    );
    assert!(
        dns_lines.contains(&&"DNS web.query.consul. A -> 3 []".to_string()),
        "{dns_lines:#?}"
    );
    assert!(
        dns_lines.contains(&&r#"DNS V1.Web.Service.Consul. A -> 0 ["192.0.2.10"]"#.to_string()),
        "{dns_lines:#?}"
    );
}

/// Nothing answers on `addr` (refused): the stand-in binds its client
/// addresses, not the wildcard.
fn assert_refused(addr: &str) {
    let err = TcpStream::connect(addr).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
}

#[test]
fn consul_container_serves_http_and_dns_on_every_client_address() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dirs = consul_dirs();
    dirs.single_server(json!({"datacenter": "eu-west", "node_name": "standin-node"}));
    let record_dir = dirs.tmp.path().join("record");
    std::fs::create_dir(&record_dir).unwrap();
    docker::give_to_consul_user(&record_dir);
    let name = c.add("consul-serving");
    run(
        &name,
        &[
            "-v",
            &volume(&dirs.config, "/consul/config", "ro"),
            "-v",
            &volume(&dirs.data, "/consul/data", ""),
            "-v",
            &volume(&record_dir, "/record", ""),
        ],
        docker::CONSUL_IMAGE,
        &["agent", "-record=/record/calls.jsonl"],
    );
    assert_ready(&name);
    let logs = docker::logs(&name);
    assert!(
        logs.contains(
            r#"node_name="standin-node" datacenter="eu-west" domain="consul" server=true bootstrap_expect=1"#
        ),
        "{logs}"
    );
    exercise_api_and_dns(
        &dirs.client,
        8500,
        8600,
        "standin-node",
        "eu-west",
        &record_dir.join("calls.jsonl"),
    );
    // Only the client addresses: another loopback address has nothing.
    assert_refused(&format!("{}:8500", loopback()));

    // docker stop while a client holds a connection mid-request.
    let mut held = TcpStream::connect(format!("{}:8500", dirs.client[0])).unwrap();
    held.write_all(b"GET /v1/agent/self HTTP/1.1\r\n").unwrap();
    eprintln!(
        "docker stop while serving took {:?}",
        assert_stops_promptly(&name)
    );
}

#[test]
fn consul_container_with_hang_accepts_but_never_answers() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let dirs = consul_dirs();
    let name = c.add("consul-hang");
    run(
        &name,
        &["-v", &volume(&dirs.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent", "-hang"],
    );
    assert_ready(&name);
    assert!(
        docker::logs(&name).contains("hang=true"),
        "{}",
        docker::logs(&name)
    );
    assert_hangs(&dirs.client[1], 8500, 8600);
    assert_stops_promptly(&name);
}

/// The stand-in at ip accepts TCP and reads, never answers HTTP (a read
/// with a 1 s timeout times out), and never answers DNS.
fn assert_hangs(ip: &str, http_port: u16, dns_port: u16) {
    let mut c = TcpStream::connect(format!("{ip}:{http_port}")).unwrap();
    c.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let t = Instant::now();
    let err = c.read(&mut [0; 64]).map(|n| n.to_string()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    // More data is still read (the connection stays open, never answered).
    c.write_all(b"GET /v1/status/leader HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(c.read(&mut [0; 64]).is_err());
    let (code, out) = dig(ip, dns_port, "web.service.consul", &[]);
    assert_eq!(code, 9, "dig got an answer from a hung stand-in: {out}");
    assert!(out.contains("timed out"), "{out}");
}

#[test]
fn consul_container_exits_1_when_a_client_address_cannot_be_bound() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();

    // 203.0.113.77 (TEST-NET-3) is on no interface here; binding it sends
    // nothing anywhere.
    let absent = consul_dirs();
    let missing_addr = format!("{} 203.0.113.77", absent.client[0]);
    docker::write_interfaces_json(&absent.config, &missing_addr, "192.0.2.10");
    let not_here = c.add("consul-addr-not-here");
    run(
        &not_here,
        &["-v", &volume(&absent.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent"],
    );

    // The HTTP port is taken on the second address.
    let busy = consul_dirs();
    let taken = TcpListener::bind(format!("{}:8500", busy.client[1])).unwrap();
    let in_use = c.add("consul-port-in-use");
    run(
        &in_use,
        &["-v", &volume(&busy.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent"],
    );

    // A go-sockaddr template passes validation but cannot be served.
    let template = consul_dirs();
    let tpl = c.add("consul-template-client");
    run(
        &tpl,
        &["-v", &volume(&template.config, "/consul/config", "ro")],
        docker::CONSUL_IMAGE,
        &["agent", "-client", r#"{{ GetInterfaceIP "eth0" }}"#],
    );

    assert_exited(
        &not_here,
        1,
        "cannot listen for HTTP on 203.0.113.77:8500: Cannot assign requested address",
    );
    assert_exited(
        &in_use,
        1,
        &format!(
            "cannot listen for HTTP on {}:8500: Address already in use",
            busy.client[1]
        ),
    );
    assert_exited(&tpl, 1, "is a go-sockaddr template");
    for name in [&not_here, &in_use, &tpl] {
        assert!(
            !docker::logs(name).contains(docker::READY_MARK),
            "{name} printed ready before binding"
        );
    }
    drop(taken);
}

// ---------------------------------------------------------------------------
// The consul stand-in as a plain process (no Docker engine needed).

/// The release consul-standin binary, built once per test process through
/// `NODEPREP_STANDINS_BUILD_ONLY=1 tests/docker/build-standins.sh` (the same
/// static build the images get).
fn standin_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(repo.join("tests/docker/build-standins.sh"))
            .env("NODEPREP_STANDINS_BUILD_ONLY", "1")
            .current_dir(repo)
            .output()
            .unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "build-standins.sh (build only) failed"
        );
        let dir = String::from_utf8(out.stdout).unwrap();
        let bin = Path::new(dir.trim()).join("consul-standin");
        assert!(bin.is_file(), "{}", bin.display());
        bin
    })
}

/// A running consul stand-in process (optionally inside a netns), killed on
/// drop unless it already exited.
struct Standin {
    child: Child,
    /// Its stdout and stderr lines so far.
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Standin {
    /// Starts `consul-standin agent ARGS` (in `netns` if given) and waits
    /// until it is ready or has exited.
    fn start(netns: Option<&Netns>, args: &[String]) -> Standin {
        let bin = standin_bin().to_str().unwrap();
        let mut command = match netns {
            Some(ns) => ns.command(&[bin]),
            None => Command::new(bin),
        };
        let mut child = command
            .arg("agent")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let mut s = Standin { child, output };
        let deadline = Instant::now() + OUTCOME_TIMEOUT;
        while !s.text().contains(docker::READY_MARK) {
            if s.child.try_wait().unwrap().is_some() {
                // Give the reader threads a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stand-in not ready: {}",
                s.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    fn ready_line(&self) -> String {
        self.output
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(docker::READY_MARK))
            .unwrap_or_else(|| panic!("no ready line: {}", self.text()))
            .clone()
    }

    /// Waits for the process to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM (through kill(1): std has no kill with a signal); how long
    /// the process took to exit 0.
    fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let code = self.wait_exit(Duration::from_secs(5));
        let took = t.elapsed();
        assert_eq!(code, 0, "{}", self.text());
        assert!(self.text().contains("got SIGTERM"), "{}", self.text());
        took
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn dir_args(dirs: &ConsulDirs) -> Vec<String> {
    vec![
        format!("-config-dir={}", dirs.config.display()),
        format!("-data-dir={}", dirs.data.display()),
    ]
}

#[test]
fn consul_process_serves_on_configured_ports_and_exits_on_sigterm_while_serving() {
    let dirs = consul_dirs();
    // Ports from the config (as nodeprep writes them), node name from the
    // hostname, a single server from the flags, one address from -client.
    let [a, b] = dirs.client.clone();
    let c = loopback();
    dirs.write(
        "interfaces.json",
        json!({"client_addr": dirs.client_addr(), "bind_addr": "192.0.2.10",
               "ports": {"http": 18500, "dns": 18600}}),
    );
    let record = dirs.tmp.path().join("calls.jsonl");
    let mut args = dir_args(&dirs);
    args.extend([
        "-server".to_string(),
        "-bootstrap-expect=1".to_string(),
        format!("-client={a} {c}"),
        format!("-record={}", record.display()),
    ]);
    let mut s = Standin::start(None, &args);
    let ready = s.ready_line();
    assert!(
        ready.contains(&format!(
            " http={a}:18500,{c}:18500 dns={a}:18600,{c}:18600"
        )),
        "{ready}"
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let clients = [a.clone(), c.clone()];
    exercise_api_and_dns(&clients, 18500, 18600, hostname.trim(), "dc1", &record);
    // -client overrode interfaces.json: b is not served.
    assert_refused(&format!("{b}:18500"));

    // SIGTERM while one connection is idle and another is mid-request.
    let _idle = TcpStream::connect(format!("{a}:18500")).unwrap();
    let mut partial = TcpStream::connect(format!("{c}:18500")).unwrap();
    partial
        .write_all(b"PUT /v1/agent/check/register HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let took = s.terminate();
    eprintln!("consul stand-in exited {took:?} after SIGTERM while serving");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn consul_process_with_hang_and_port_flags() {
    let dirs = consul_dirs();
    let mut args = dir_args(&dirs);
    args.extend(["-hang", "-http-port=28500", "-dns-port", "28600"].map(String::from));
    let record = dirs.tmp.path().join("calls.jsonl");
    args.push(format!("-record={}", record.display()));
    let mut s = Standin::start(None, &args);
    assert!(s
        .ready_line()
        .contains("hang=true (accepts and reads, NEVER answers)"));
    assert_hangs(&dirs.client[0], 28500, 28600);
    // Hung requests are still recorded, with no status or rcode.
    let lines = record_lines(&record);
    assert_eq!(lines[0]["path"], "/v1/agent/self");
    assert_eq!(lines[0]["status"], Value::Null);
    assert!(
        lines
            .iter()
            .any(|l| l["proto"] == "dns" && l["rcode"].is_null()),
        "{lines:?}"
    );
    assert!(s.terminate() < Duration::from_secs(1));
}

#[test]
fn consul_process_bad_flags_exit_2() {
    let dirs = consul_dirs();
    for bad in ["-http-port=70000", "-hang=perhaps", "-dns-port"] {
        let mut args = dir_args(&dirs);
        args.push(bad.to_string());
        let mut s = Standin::start(None, &args);
        assert_eq!(s.wait_exit(OUTCOME_TIMEOUT), 2, "{bad}: {}", s.text());
        assert!(s.text().contains(docker::ERROR_MARK), "{}", s.text());
    }
}

// ---------------------------------------------------------------------------
// In a network namespace (root): the link address and the wildcard.

#[test]
fn consul_process_in_a_netns_serves_the_link_address_and_binds_the_wildcard_only_when_told() {
    if let Err(why) = netns::prerequisites(&["curl", "dig"]) {
        return common::prerequisite_missing(&why);
    }
    let ns = Netns::new("selftest-standin");
    let dirs = consul_dirs();
    docker::write_interfaces_json(&dirs.config, "127.0.0.1 169.254.1.1", "192.0.2.10");
    dirs.single_server(json!({}));

    // The link address is not there yet: exit 1, as the real agent.
    let mut s = Standin::start(Some(&ns), &dir_args(&dirs));
    assert_eq!(s.wait_exit(OUTCOME_TIMEOUT), 1, "{}", s.text());
    assert!(
        s.text().contains(
            "cannot listen for HTTP on 169.254.1.1:8500: Cannot assign requested address"
        ),
        "{}",
        s.text()
    );
    assert!(!s.text().contains(docker::READY_MARK));

    // nodeprep's layout: the link address (here on the namespace's lo) and
    // the host's address.
    ns.add_lo_address("169.254.1.1/32");
    ns.add_lo_address("192.0.2.10/32");
    let mut s = Standin::start(Some(&ns), &dir_args(&dirs));
    assert!(
        s.ready_line()
            .contains(" http=127.0.0.1:8500,169.254.1.1:8500 dns=127.0.0.1:8600,169.254.1.1:8600"),
        "{}",
        s.text()
    );
    for ip in ["169.254.1.1", "127.0.0.1"] {
        let leader = ns.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ip}:8500/v1/status/leader"),
        ]);
        assert_eq!(leader, "\"192.0.2.10:8300\"");
        let a = ns.run_ok(&[
            "dig",
            &format!("@{ip}"),
            "-p",
            "8600",
            "consul.service.consul.",
            "+short",
            "+time=1",
            "+tries=1",
        ]);
        assert_eq!(a.trim(), "192.0.2.10");
    }
    // Not on bind_addr: nodeprep's exposure probe relies on that.
    let out = ns
        .command(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://192.0.2.10:8500/v1/agent/self",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl reached bind_addr: {out:?}"
    );
    assert!(s.terminate() < Duration::from_secs(1));

    // -client=0.0.0.0: the wildcard, so bind_addr answers too.
    let mut args = dir_args(&dirs);
    args.push("-client=0.0.0.0".into());
    let mut s = Standin::start(Some(&ns), &args);
    assert!(
        s.ready_line()
            .contains(" http=0.0.0.0:8500 dns=0.0.0.0:8600"),
        "{}",
        s.text()
    );
    let me = ns.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://192.0.2.10:8500/v1/agent/self",
    ]);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["Member"]["Addr"], "192.0.2.10");
    let a = ns.run_ok(&[
        "dig",
        "@192.0.2.10",
        "-p",
        "8600",
        "consul.service.consul",
        "+short",
        "+time=1",
        "+tries=1",
    ]);
    assert_eq!(a.trim(), "192.0.2.10");
    assert!(s.terminate() < Duration::from_secs(1));
}
