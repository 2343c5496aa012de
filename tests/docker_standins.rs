//! Self-test of the Docker harness (tests/docker/, tests/common/docker.rs) and
//! of the TEST STAND-INS (standins/: NOT Consul, NOT registrator): each
//! stand-in stays up when started the way nodeprep must start the real
//! program, and exits with a reason otherwise. Needs a Docker engine: one is
//! started when none answers; without one the tests fail under CI=true and
//! are skipped (loudly) elsewhere.
//!
//! Containers are named `nodeprep-selftest-<pid>-<n>-<what>`, host network,
//! restart policy `no` (unless the test is about restarts), removed at the
//! end of each test.

#[path = "common/docker.rs"]
mod docker;

use docker::{Containers, Outcome};
use std::path::Path;
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

/// A config dir with a valid interfaces.json and an empty data dir.
struct ConsulDirs {
    _tmp: tempfile::TempDir,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn consul_dirs() -> ConsulDirs {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("consul.d");
    let data = tmp.path().join("data");
    std::fs::create_dir(&config).unwrap();
    std::fs::create_dir(&data).unwrap();
    docker::write_interfaces_json(&config, "127.0.0.1 169.254.1.1", "192.0.2.10");
    ConsulDirs {
        _tmp: tmp,
        config,
        data,
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
    for image in [
        docker::CONSUL_IMAGE,
        docker::CONSUL_IMAGE_2,
        docker::REGISTRATOR_IMAGE,
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
    assert!(
        logs.contains(r#"client_addr="127.0.0.1 169.254.1.1" bind_addr="192.0.2.10""#),
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
    assert_exited(&broken, 1, "/consul/config/extra.json is not valid JSON");
    assert_exited(&missing_field, 1, "bind_addr is missing");
    assert_exited(&read_only, 1, "data dir /consul/data is not writable");
    assert!(!ro.data.join("node-id").exists());
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

#[test]
fn registrator_runs_with_the_docker_socket_ip_and_consul_uri() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let name = c.add("registrator-ok");
    let sock = format!("{}:/tmp/docker.sock", docker::DOCKER_SOCKET);
    run(
        &name,
        &["-v", &sock],
        docker::REGISTRATOR_IMAGE,
        &[
            "-ip",
            "192.0.2.10",
            "-resync=30",
            "consul://169.254.1.1:8500",
        ],
    );
    assert_ready(&name);
    assert!(docker::logs(&name).contains("ip=192.0.2.10 registry=consul://169.254.1.1:8500"));
    assert_stops_promptly(&name);
}

#[test]
fn registrator_exits_without_a_usable_socket_or_with_wrong_arguments() {
    if !docker::docker_or_skip() {
        return;
    }
    let c = Containers::new();
    let sock = format!("{}:/tmp/docker.sock", docker::DOCKER_SOCKET);
    let good = ["-ip", "192.0.2.10", "consul://169.254.1.1:8500"];

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
        ("no-args", vec!["-v", &sock], vec![], 1, "Missing required argument for registry URI"),
        ("no-ip", vec!["-v", &sock], vec!["consul://169.254.1.1:8500"], 1, "-ip <IPv4> is missing"),
        ("ip-after-uri", vec!["-v", &sock], vec!["consul://169.254.1.1:8500", "-ip", "192.0.2.10"], 1, "Extra unparsed arguments"),
        ("ipv6", vec!["-v", &sock], vec!["-ip", "2001:db8::1", "consul://169.254.1.1:8500"], 1, "is not an IPv4 address"),
        ("etcd-uri", vec!["-v", &sock], vec!["-ip", "192.0.2.10", "etcd://127.0.0.1:2379"], 1, "does not start with consul://"),
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
