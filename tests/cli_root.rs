//! The real binary against a temporary tree (`--root`): the converge cycle,
//! idempotence, drift detection per resource, and refusals that change nothing.

mod common;

use common::{TestEnv, BIN};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const MANAGED: &[(&str, &str)] = &[
    ("network", "/etc/systemd/network/10-dummy0.netdev"),
    ("network", "/etc/systemd/network/10-dummy0.network"),
    ("dnsmasq", "/etc/dnsmasq.d/consul.conf"),
    ("consul-config", "/etc/consul.d/interfaces.json"),
    ("consul-config", "/etc/consul.d/agent.json"),
    ("environment", "/etc/environment"),
    ("docker-dns", "/etc/docker/daemon.json"),
];

fn converged() -> TestEnv {
    let env = TestEnv::new();
    env.converge(&[]).expect_code(0);
    env
}

#[test]
fn first_apply_changes_everything_second_changes_nothing() {
    let env = TestEnv::new();
    let first = env.converge(&[]);
    first.expect_code(0);
    assert_eq!(
        first.statuses(),
        [
            ("link", "skipped"),
            ("network", "changed"),
            ("dnsmasq", "changed"),
            ("resolver", "ok"),
            ("consul-config", "changed"),
            ("environment", "changed"),
            ("docker-dns", "changed"),
            ("podman-boot", "skipped"),
            ("consul", "skipped"),
            ("registrator", "skipped"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let doc = first.json();
    assert_eq!(doc["command"], "apply");
    assert!(doc["host"].is_string() && doc["duration_seconds"].is_f64());
    assert!(
        doc["timestamp"].as_str().unwrap().ends_with('Z'),
        "{}",
        doc["timestamp"]
    );
    let probes: Vec<(&str, &str)> = doc["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        probes,
        [
            ("consul-http", "skipped"),
            ("consul-dns", "skipped"),
            ("host-dns", "skipped"),
            ("upstream-dns", "skipped"),
            ("registrator", "skipped"),
            ("consul-exposure", "skipped")
        ]
    );
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["summary"],
        serde_json::json!({"ok": 1, "changed": 5, "drift": 0, "failed": 0, "skipped": 10})
    );
    for (_, path) in MANAGED {
        let meta = std::fs::metadata(env.path(path)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(env.path("/etc/consul.d/interfaces.json")).unwrap(),
        "{\n  \"client_addr\": \"127.0.0.1 169.254.1.1\",\n  \"bind_addr\": \"192.0.2.10\",\n  \"ports\": {\n    \"http\": 8500,\n    \"dns\": 8600\n  }\n}\n"
    );

    let before = env.snapshot();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = env.converge(&[]);
    second.expect_code(0);
    assert_eq!(second.json()["summary"]["changed"], 0);
    let managed_only = |snap: Vec<(std::path::PathBuf, i128, Vec<u8>)>| {
        snap.into_iter()
            .filter(|(p, _, _)| !p.ends_with("run/nodeprep.lock"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        managed_only(env.snapshot()),
        managed_only(before),
        "second apply rewrote a file"
    );

    env.run(&["check"]).expect_code(0);
}

#[test]
fn each_perturbation_is_drift_of_exactly_its_resource() {
    type Perturb = fn(&TestEnv);
    let cases: &[(&str, Perturb)] = &[
        ("network", |e| {
            std::fs::write(
                e.path("/etc/systemd/network/10-dummy0.netdev"),
                "[NetDev]\nName=dummy0\nKind=bridge\n",
            )
            .unwrap()
        }),
        ("network", |e| {
            std::fs::remove_file(e.path("/etc/systemd/network/10-dummy0.network")).unwrap()
        }),
        ("dnsmasq", |e| {
            let p = e.path("/etc/dnsmasq.d/consul.conf");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("bind-dynamic", "bind-interfaces");
            std::fs::write(p, text).unwrap()
        }),
        ("consul-config", |e| {
            std::fs::set_permissions(
                e.path("/etc/consul.d/interfaces.json"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap()
        }),
        ("consul-config", |e| {
            std::fs::write(e.path("/etc/consul.d/interfaces.json"), "{}\n").unwrap()
        }),
        ("docker-dns", |e| {
            std::fs::write(
                e.path("/etc/docker/daemon.json"),
                "{\"dns\": [\"8.8.8.8\"], \"debug\": true}",
            )
            .unwrap()
        }),
        ("environment", |e| {
            let p = e.path("/etc/environment");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("169.254.1.1:8500", "127.0.0.1:8500");
            std::fs::write(p, text).unwrap()
        }),
    ];
    for (resource, perturb) in cases {
        let env = converged();
        perturb(&env);
        let check = env.run(&["--format", "json", "check"]);
        check.expect_code(2);
        let drifted: Vec<String> = check
            .statuses()
            .into_iter()
            .filter(|(_, s)| s == "drift")
            .map(|(id, _)| id)
            .collect();
        assert_eq!(drifted, vec![resource.to_string()], "{}", check.stdout);
        // apply repairs it (doing what plan said), and check is clean again
        let apply = env.converge(&[]);
        apply.expect_code(0);
        assert_eq!(apply.json()["summary"]["changed"], 1, "{}", apply.stdout);
        env.run(&["check"]).expect_code(0);
    }
}

#[test]
fn environment_merge_keeps_foreign_lines_byte_for_byte() {
    let env = TestEnv::new();
    let original: &[u8] = b"# set by the image\nPATH=\"/usr/local/sbin:/usr/bin\"\r\nLANG=C.UTF-8\n\nCONSUL_HTTP_ADDR=127.0.0.1:8500\nodd line \xff\xfe\nCONSUL_HTTP_ADDR=stale\nLAST=no-newline";
    std::fs::create_dir_all(env.path("/etc")).unwrap();
    std::fs::write(env.path("/etc/environment"), original).unwrap();
    env.run(&["apply", "--only", "environment"]).expect_code(0);
    assert_eq!(
        std::fs::read(env.path("/etc/environment")).unwrap(),
        b"# set by the image\nPATH=\"/usr/local/sbin:/usr/bin\"\r\nLANG=C.UTF-8\n\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nodd line \xff\xfe\nLAST=no-newline".to_vec()
    );
}

#[test]
fn dry_run_and_plan_report_pending_changes_and_write_nothing() {
    let env = TestEnv::new();
    let dry = env.run(&["--format", "json", "apply", "--dry-run"]);
    dry.expect_code(2);
    assert_eq!(dry.json()["summary"]["drift"], 5);
    let plan = env.run(&["plan"]);
    plan.expect_code(2);
    assert!(
        plan.stdout.contains("+server=/consul/169.254.1.1#8600"),
        "{}",
        plan.stdout
    );
    assert!(
        env.snapshot().is_empty(),
        "dry run wrote {:?}",
        env.snapshot()
    );
}

#[test]
fn bad_configs_exit_78_and_write_nothing() {
    let cases: &[(&str, &str)] = &[
        ("[link]\nname = \"this-name-is-too-long\"\n", "link.name"),
        ("[link]\naddress = \"169.254.1.1/16\"\n", "link.address"),
        ("[consul]\nbind_addr = \"not-an-ip\"\n", "consul.bind_addr"),
        ("[consul]\ndns_port = 0\n", "consul.dns_port"),
        (
            "[dnsmasq]\nlisten = [\"127.0.0.1\", \"localhost\"]\n",
            "dnsmasq.listen",
        ),
        (
            "[environment]\nfile = \"etc/environment\"\n",
            "environment.file",
        ),
        ("[consul]\nunknown_key = 1\n", "unknown_key"),
        ("[link\n", "line 1"),
        (
            "[consul]\nbootstrap_expect = 3\n",
            "consul.bootstrap_expect",
        ),
        ("[consul]\nencrypt = \"dG9vc2hvcnQ=\"\n", "consul.encrypt"),
        (
            "[consul]\nretry_join = [\"10.0.0.10\", \" \"]\n",
            "consul.retry_join",
        ),
        ("[consul]\nimage = \"hashicorp/consul\"\n", "consul.image"),
    ];
    for (text, needle) in cases {
        let env = TestEnv::new();
        env.write_config(text);
        for args in [&["apply"][..], &["check"], &["config", "validate"]] {
            let run = env.run(args);
            run.expect_code(78);
            assert!(
                run.stderr.contains(needle),
                "{args:?} {text:?}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains("nodeprep.toml"),
                "error must name the file: {}",
                run.stderr
            );
        }
        assert!(
            env.snapshot().is_empty(),
            "{text:?} wrote {:?}",
            env.snapshot()
        );
    }
}

#[test]
fn bad_command_lines_exit_64() {
    let env = TestEnv::new();
    env.run(&["apply", "--only", "nosuch"]).expect_code(64);
    env.run(&["frobnicate"]).expect_code(64);
    env.run(&["check", "--dry-run"]).expect_code(64);
    let run = Command::new(BIN)
        .args(["--root", "/nonexistent/tree", "apply"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(64));
    assert!(env.snapshot().is_empty());
}

#[test]
fn config_default_parses_back_and_validates() {
    let out = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let env = TestEnv::new();
    env.write_config(std::str::from_utf8(&out.stdout).unwrap());
    env.run(&["config", "validate"]).expect_code(0);
    let explicit = Command::new(BIN)
        .args(["config", "validate"])
        .arg(env.config())
        .output()
        .unwrap();
    assert_eq!(explicit.status.code(), Some(0));
    let missing = Command::new(BIN)
        .args(["config", "validate", "/nonexistent/nodeprep.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
}

#[test]
fn live_apply_as_non_root_exits_77_and_changes_nothing() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return common::prerequisite_missing("must run as root to drop to an unprivileged user");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Every managed path points into the temp dir, so "nothing changed" is
    // checkable and the host's /etc is never at risk.
    let d = dir.path().display();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(
        &config,
        format!("[networkd]\ndir = \"{d}/network\"\n[dnsmasq]\nfile = \"{d}/dnsmasq.conf\"\n[consul]\nconfig_dir = \"{d}/consul.d\"\nbind_addr = \"192.0.2.10\"\n[environment]\nfile = \"{d}/environment\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("apply")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("nodeprep.toml")]);
}

#[test]
fn a_second_apply_is_refused_while_the_lock_is_held() {
    use nix::fcntl::{Flock, FlockArg};
    let env = TestEnv::new();
    // Under --root the tree itself is the lock: nothing is written into an
    // image for the lock's sake.
    let dir = std::fs::File::open(env.root()).unwrap();
    let held = Flock::lock(dir, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    for args in [&["apply"][..], &["remove"]] {
        let run = env.run(args);
        run.expect_code(1);
        // The holder comes from the kernel's lock table.
        assert!(
            run.stderr.contains(&format!("pid {}", std::process::id())),
            "{}",
            run.stderr
        );
    }
    assert!(
        !env.path("/etc").exists(),
        "apply changed files without the lock"
    );
    // check and dry runs do not need the lock
    env.run(&["check"]).expect_code(2);
    drop(held);
    env.run(&["apply"]).expect_code(0);
    assert!(
        !env.path("/run").exists(),
        "the lock left a file in the tree"
    );
}

#[test]
fn bind_addr_auto_is_not_guessed_offline() {
    let env = TestEnv::new();
    env.write_config("");
    let run = env.run(&["--format", "json", "apply"]);
    run.expect_code(0);
    let consul = run
        .statuses()
        .into_iter()
        .find(|(id, _)| id == "consul-config")
        .unwrap();
    assert_eq!(consul.1, "skipped");
    assert!(!env.path("/etc/consul.d/interfaces.json").exists());
}

#[test]
fn human_output_has_one_line_per_resource_and_a_summary() {
    let env = TestEnv::new();
    let run = env.run(&["apply"]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    // 10 resources, 6 probes (skipped offline), the summary.
    assert_eq!(lines.len(), 17, "{}", run.stdout);
    assert!(lines[0].starts_with("skipped  link "), "{}", lines[0]);
    assert!(lines[1].starts_with("changed  network "), "{}", lines[1]);
    assert_eq!(
        lines[16],
        "apply: 1 ok, 5 changed, 0 drift, 0 failed, 10 skipped"
    );
    let quiet = env.run(&["-q", "apply"]);
    quiet.expect_code(0);
    assert_eq!(quiet.stdout, "");
}

#[test]
fn shipped_example_configs_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(BIN)
                .args(["config", "validate"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in {}", dir.display());
}

#[test]
fn gossip_key_is_redacted_from_plan_and_its_file_is_0640() {
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let env = TestEnv::new();
    env.write_config(&format!(
        "[consul]\nbind_addr = \"192.0.2.10\"\nencrypt = \"{key}\"\n"
    ));
    for args in [
        &["plan"][..],
        &["--format", "json", "apply", "--diff"],
        &["-v", "check"],
    ] {
        let run = env.run(args);
        assert!(
            !run.stdout.contains(key) && !run.stderr.contains(key),
            "{args:?} printed the key:\n{}",
            run.stdout
        );
    }
    let agent = env.path("/etc/consul.d/agent.json");
    assert_eq!(
        std::fs::metadata(&agent).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert!(std::fs::read_to_string(agent).unwrap().contains(key));
}

#[test]
fn prometheus_output_parses_with_the_reference_parser() {
    let env = converged();
    std::fs::write(env.path("/etc/dnsmasq.d/consul.conf"), "edited\n").unwrap();
    let run = env.run(&["--format", "prometheus", "check"]);
    run.expect_code(2);
    // prometheus_client's own text parser (installed by tests/setup.sh).
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
seen = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name == "nodeprep_status" and s.value == 1:
            seen[s.labels["id"]] = s.labels["status"]
        if s.name == "nodeprep_summary":
            seen["summary_" + s.labels["status"]] = int(s.value)
        if s.name == "nodeprep_run_duration_seconds":
            seen["duration"] = s.value
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items()) if k != "duration"))
assert seen["duration"] >= 0
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(run.stdout.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        return common::prerequisite_missing(
            "python3 module prometheus_client (pip install prometheus-client)",
        );
    }
    assert!(out.status.success(), "{stderr}\n{}", run.stdout);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "consul=skipped consul-config=ok consul-dns=skipped consul-exposure=skipped consul-http=skipped \
         dnsmasq=drift docker-dns=ok environment=ok host-dns=skipped link=skipped network=ok \
         podman-boot=skipped registrator=skipped resolver=ok summary_changed=0 summary_drift=1 \
         summary_failed=0 summary_ok=5 summary_skipped=10 upstream-dns=skipped"
    );
}

#[test]
fn facts_reports_what_nodeprep_detects() {
    let env = TestEnv::new();
    let run = env.run(&["--format", "json", "facts"]);
    run.expect_code(0);
    let doc = run.json();
    for key in [
        "hostname",
        "os",
        "kernel",
        "default_route_interface",
        "default_route_address",
        "bind_addr",
        "systemd",
        "systemd_networkd_active",
        "dnsmasq_active",
        "systemd_resolved_active",
        "dns_backend",
        "resolv_conf",
        "kernel_dummy_support",
        "docker_socket",
        "docker_engine",
    ] {
        assert!(doc.get(key).is_some(), "facts lacks {key}: {}", run.stdout);
    }
    assert_eq!(doc["bind_addr"], "192.0.2.10 (configured)");
    let human = env.run(&["facts"]);
    human.expect_code(0);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("bind_addr") && l.contains("192.0.2.10")),
        "{}",
        human.stdout
    );
}

/// A tree as an image builder might hand it over: foreign lines in
/// /etc/environment (one of them an old CONSUL_HTTP_ADDR, no newline at the
/// end), a hand-written dnsmasq drop-in of another mode and owner, and a
/// foreign file in the agent's config dir.
fn foreign_tree(env: &TestEnv) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(env.path("/etc/dnsmasq.d")).unwrap();
    std::fs::create_dir_all(env.path("/etc/consul.d")).unwrap();
    // 0750, readable by the container's consul user through its group
    // (1000): not drift, so the round trip keeps it as it is.
    std::fs::set_permissions(
        env.path("/etc/consul.d"),
        std::fs::Permissions::from_mode(if nix::unistd::geteuid().is_root() {
            0o750
        } else {
            0o755
        }),
    )
    .unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(env.path("/etc/consul.d"), Some(0), Some(1000)).unwrap();
    }
    std::fs::write(
        env.path("/etc/environment"),
        b"# from the image\r\nPATH=\"/usr/local/bin:/usr/bin\"\nCONSUL_HTTP_ADDR=127.0.0.1:8500\nLANG=C.UTF-8",
    )
    .unwrap();
    let conf = env.path("/etc/dnsmasq.d/consul.conf");
    std::fs::write(&conf, "# hand-written\nserver=/consul/10.0.0.1#8600\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&conf, Some(1000), Some(1000)).unwrap();
    }
    std::fs::write(
        env.path("/etc/consul.d/other.json"),
        "{\"log_level\": \"warn\"}\n",
    )
    .unwrap();
    std::fs::create_dir_all(env.path("/etc/docker")).unwrap();
    std::fs::write(
        env.path("/etc/docker/daemon.json"),
        "{ \"log-driver\": \"journald\", \"dns\": [\"192.0.2.53\"] }",
    )
    .unwrap();
}

#[test]
fn apply_then_remove_gives_back_the_tree_it_started_from() {
    for (name, prepare) in [
        ("empty root", (|_: &TestEnv| {}) as fn(&TestEnv)),
        ("foreign files", foreign_tree),
    ] {
        let env = TestEnv::new();
        prepare(&env);
        let before = common::tree(&env.root());
        env.converge(&[]).expect_code(0);
        assert_ne!(
            common::tree(&env.root()),
            before,
            "{name}: apply changed nothing"
        );
        // Converged: a second remove has nothing left to do.
        let removed = env.remove(&[]);
        removed.expect_code(0);
        assert!(
            removed.json()["summary"]["changed"].as_u64().unwrap() >= 4,
            "{name}: {}",
            removed.stdout
        );
        assert_eq!(
            common::tree(&env.root()),
            before,
            "{name}: the tree after apply and remove differs from the tree before apply"
        );
        let again = env.run(&["--format", "json", "remove", "--dry-run"]);
        again.expect_code(0);
        // And apply converges it again as the first time.
        env.converge(&[]).expect_code(0);
        env.run(&["check"]).expect_code(0);
    }
}

#[test]
fn remove_keeps_what_others_changed_and_says_where() {
    let env = converged();
    let conf = env.path("/etc/dnsmasq.d/consul.conf");
    std::fs::write(&conf, "# an operator's edit\n").unwrap();
    // apply puts nodeprep's file back, keeping the edit.
    let apply = env.converge(&[]);
    let detail = apply.json()["resources"][2]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("edited copy kept"), "{detail}");
    let kept = env.path("/var/lib/nodeprep/edited/etc/dnsmasq.d/consul.conf");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "# an operator's edit\n"
    );
    // An edit made after the last apply is kept by remove too.
    std::fs::write(&conf, "# a later edit\n").unwrap();
    let removed = env.remove(&[]);
    removed.expect_code(0);
    assert!(!conf.exists());
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "# a later edit\n");
    let notes = removed.json()["notes"].to_string();
    assert!(notes.contains("/var/lib/nodeprep"), "{}", removed.stdout);
    assert!(!env.path("/var/lib/nodeprep/state.json").exists());
}

#[test]
fn a_missing_or_corrupt_record_never_stops_apply_and_the_report_says_so() {
    let env = converged();
    let record = env.path("/var/lib/nodeprep/state.json");
    std::fs::write(&record, "{ not json").unwrap();
    std::fs::write(env.path("/etc/dnsmasq.d/consul.conf"), "drifted\n").unwrap();
    let apply = env.converge(&[]);
    apply.expect_code(0);
    assert!(
        apply.json()["notes"]
            .to_string()
            .contains("state record is unreadable"),
        "{}",
        apply.stdout
    );
    env.run(&["check"]).expect_code(0);
    // With the record gone altogether, remove still takes away the files
    // that hold exactly what nodeprep writes.
    std::fs::remove_file(&record).unwrap();
    let removed = env.remove(&[]);
    removed.expect_code(0);
    assert!(!env.path("/etc/systemd/network/10-dummy0.netdev").exists());
    assert!(!env.path("/etc/consul.d/interfaces.json").exists());
    let env_file = std::fs::read_to_string(env.path("/etc/environment")).unwrap_or_default();
    assert!(!env_file.contains("CONSUL_HTTP_ADDR"), "{env_file}");
}

#[test]
fn daemon_json_keeps_foreign_keys_and_an_invalid_one_is_never_overwritten() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("/etc/docker")).unwrap();
    let path = env.path("/etc/docker/daemon.json");
    std::fs::write(
        &path,
        "{\"log-driver\": \"journald\", \"live-restore\": true}\n",
    )
    .unwrap();
    env.converge(&["--only", "docker-dns"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\n  \"log-driver\": \"journald\",\n  \"live-restore\": true,\n  \"dns\": [\n    \"169.254.1.1\"\n  ]\n}\n"
    );
    let broken = "{\"log-driver\": \"journald\",";
    std::fs::write(&path, broken).unwrap();
    let run = env.run(&["--format", "json", "apply", "--only", "docker-dns"]);
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("/etc/docker/daemon.json is not valid JSON"),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    // Opting out leaves the file alone.
    env.write_config("[consul]\nbind_addr = \"192.0.2.10\"\n[docker]\ndaemon_dns = false\n");
    let run = env.run(&["--format", "json", "apply", "--only", "docker-dns"]);
    run.expect_code(0);
    assert_eq!(
        run.statuses(),
        [("docker-dns".to_string(), "skipped".to_string())]
    );
}

#[test]
fn remove_dry_run_and_selection_change_only_what_they_say() {
    let env = converged();
    let before = common::tree(&env.root());
    let dry = env.run(&["--format", "json", "remove", "--dry-run"]);
    dry.expect_code(2);
    assert_eq!(
        common::tree(&env.root()),
        before,
        "remove --dry-run changed the tree"
    );
    let only = env.remove(&["--only", "environment"]);
    only.expect_code(0);
    assert_eq!(
        only.statuses(),
        [("environment".to_string(), "changed".to_string())]
    );
    assert!(env.path("/etc/dnsmasq.d/consul.conf").exists());
    let check = env.run(&["--format", "json", "check", "--no-probes"]);
    check.expect_code(2);
    // A tree nodeprep never touched: nothing to remove, nothing changes.
    let fresh = TestEnv::new();
    let r = fresh.remove(&[]);
    r.expect_code(0);
    assert_eq!(r.json()["summary"]["changed"], 0);
    assert!(common::tree(&fresh.root()).is_empty());
}

fn detail_of(run: &common::Run, id: &str) -> String {
    run.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {}", run.stdout))["detail"]
        .as_str()
        .unwrap()
        .to_string()
}

const KEYFILE: &str = "/etc/NetworkManager/system-connections/dummy0.nmconnection";
const SNIPPET: &str = "/etc/NetworkManager/conf.d/99-nodeprep-dummy0.conf";

#[test]
fn networkmanager_backend_writes_a_root_only_keyfile_and_no_networkd_files() {
    let env = TestEnv::new();
    env.write_config(
        "[network]\nbackend = \"networkmanager\"\n[consul]\nbind_addr = \"192.0.2.10\"\n",
    );
    let before = common::tree(&env.root());
    let first = env.converge(&["--only", "network"]);
    first.expect_code(0);
    let detail = detail_of(&first, "network");
    assert!(
        detail.contains("NetworkManager not managed under --root"),
        "{detail}"
    );
    let meta = std::fs::metadata(env.path(KEYFILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let text = std::fs::read_to_string(env.path(KEYFILE)).unwrap();
    for line in [
        "type=dummy\n",
        "interface-name=dummy0\n",
        "method=manual\n",
        "address1=169.254.1.1/32\n",
        "dns=169.254.1.1;\n",
        "dns-search=~consul;\n",
        "never-default=true\n",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(!env.path("/etc/systemd/network/10-dummy0.netdev").exists());
    env.run(&["check", "--only", "network"]).expect_code(0);
    // A keyfile someone loosened is drift; apply gives it back its mode.
    std::fs::set_permissions(env.path(KEYFILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.run(&["check", "--only", "network"]).expect_code(2);
    env.converge(&["--only", "network"]).expect_code(0);
    env.remove(&["--only", "network"]).expect_code(0);
    assert_eq!(common::tree(&env.root()), before);
}

#[test]
fn auto_backend_follows_networkmanager_enabled_in_the_tree() {
    let env = TestEnv::new();
    let wants = env.path("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/NetworkManager.service",
        wants.join("NetworkManager.service"),
    )
    .unwrap();
    env.converge(&["--only", "network"]).expect_code(0);
    assert!(env.path(KEYFILE).exists());
    // `--only networkd`, the id's former name, still selects it.
    let check = env.run(&["--format", "json", "check", "--only", "networkd"]);
    check.expect_code(0);
    assert_eq!(
        check.statuses(),
        [("network".to_string(), "ok".to_string())]
    );
    let detail = detail_of(&check, "network");
    assert!(
        detail.contains("networkmanager (auto: NetworkManager.service is enabled in the tree)"),
        "{detail}"
    );
}

#[test]
fn networkd_beside_an_installed_networkmanager_writes_the_unmanaged_snippet() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("/etc/NetworkManager/conf.d")).unwrap();
    let before = common::tree(&env.root());
    let run = env.converge(&["--only", "network"]);
    run.expect_code(0);
    assert!(
        detail_of(&run, "network")
            .starts_with("write /etc/NetworkManager/conf.d/99-nodeprep-dummy0.conf (missing)"),
        "{}",
        run.stdout
    );
    assert!(std::fs::read_to_string(env.path(SNIPPET))
        .unwrap()
        .contains("\nunmanaged-devices+=interface-name:dummy0\n"));
    let check = env.run(&["--format", "json", "check", "--only", "network"]);
    check.expect_code(0);
    assert!(
        detail_of(&check, "network").contains("NetworkManager leaves the link alone"),
        "{}",
        check.stdout
    );
    // Switching backends: networkd's files and the snippet go, the keyfile
    // comes; and back.
    env.write_config(
        "[network]\nbackend = \"networkmanager\"\n[consul]\nbind_addr = \"192.0.2.10\"\n",
    );
    env.converge(&["--only", "network"]).expect_code(0);
    assert!(!env.path(SNIPPET).exists());
    assert!(!env.path("/etc/systemd/network/10-dummy0.network").exists());
    assert!(env.path(KEYFILE).exists());
    env.write_config("[consul]\nbind_addr = \"192.0.2.10\"\n");
    env.converge(&["--only", "network"]).expect_code(0);
    assert!(!env.path(KEYFILE).exists() && env.path(SNIPPET).exists());
    env.remove(&["--only", "network"]).expect_code(0);
    assert_eq!(common::tree(&env.root()), before);
}

#[test]
fn podman_engine_gets_a_containers_conf_drop_in_instead_of_daemon_json() {
    let env = TestEnv::new();
    env.write_config("[docker]\nengine = \"podman\"\n[consul]\nbind_addr = \"192.0.2.10\"\n");
    let before = common::tree(&env.root());
    let run = env.converge(&["--only", "docker-dns"]);
    run.expect_code(0);
    let dropin = env.path("/etc/containers/containers.conf.d/nodeprep.conf");
    assert_eq!(
        std::fs::read_to_string(&dropin).unwrap(),
        "# Managed by nodeprep; `nodeprep apply` rewrites this file.\n\
         # The default DNS server of every container Podman creates from now on\n\
         # (containers that exist keep theirs).\n\
         [containers]\n\
         dns_servers = [\"169.254.1.1\"]\n"
    );
    assert!(!env.path("/etc/docker/daemon.json").exists());
    let check = env.run(&["--format", "json", "check", "--only", "docker-dns"]);
    check.expect_code(0);
    assert!(
        detail_of(&check, "docker-dns").contains("; engine: Podman (configured)"),
        "{}",
        check.stdout
    );
    // A site file read after nodeprep's that sets dns_servers is drift.
    let later = env.path("/etc/containers/containers.conf.d/zz-site.conf");
    std::fs::write(&later, "[containers]\ndns_servers = [\"10.0.0.2\"]\n").unwrap();
    let check = env.run(&["--format", "json", "check", "--only", "docker-dns"]);
    check.expect_code(2);
    assert!(
        detail_of(&check, "docker-dns").contains("zz-site.conf"),
        "{}",
        check.stdout
    );
    std::fs::remove_file(&later).unwrap();
    env.run(&["check", "--only", "docker-dns"]).expect_code(0);
    env.remove(&["--only", "docker-dns"]).expect_code(0);
    assert_eq!(common::tree(&env.root()), before);
}
