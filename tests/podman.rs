//! The container scenarios of `tests/containers.rs` (in
//! `tests/common/container_scenarios.rs`) against rootful Podman's
//! Docker-compatible API: `podman system service` on
//! /run/podman/podman.sock (tests/podman/ensure-podman.sh; podman.socket
//! on a real host), with the stand-in images loaded from Docker
//! (tests/podman/load-standins.sh). nodeprep finds Podman with
//! `docker.engine = "podman"` and `docker.socket = "auto"`. Then what only
//! Podman has: the containers.conf drop-in of `docker-dns`, which the API
//! service reads only when it starts, and engine checks.

mod common;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/container_scenarios.rs"]
mod scenarios;

use scenarios::{status_of, Host};

#[test]
fn fresh_apply_creates_both_and_a_second_changes_nothing() {
    if docker::podman_or_skip() {
        scenarios::fresh_apply_creates_both_and_a_second_changes_nothing();
    }
}

#[test]
fn stopped_registrator_is_drift_and_apply_starts_it() {
    if docker::podman_or_skip() {
        scenarios::stopped_registrator_is_drift_and_apply_starts_it();
    }
}

#[test]
fn changed_image_recreates_and_removed_container_comes_back() {
    if docker::podman_or_skip() {
        scenarios::changed_image_recreates_and_removed_container_comes_back();
    }
}

#[test]
fn cluster_setting_change_rewrites_agent_json_and_restarts_consul() {
    if docker::podman_or_skip() {
        scenarios::cluster_setting_change_rewrites_agent_json_and_restarts_consul();
    }
}

#[test]
fn gossip_key_file_is_0640_and_never_printed() {
    if docker::podman_or_skip() {
        scenarios::gossip_key_file_is_0640_and_never_printed();
    }
}

#[test]
fn an_unmanaged_container_is_refused_and_left_alone() {
    if docker::podman_or_skip() {
        scenarios::an_unmanaged_container_is_refused_and_left_alone();
    }
}

#[test]
fn an_image_that_cannot_be_pulled_is_a_clear_error() {
    if docker::podman_or_skip() {
        scenarios::an_image_that_cannot_be_pulled_is_a_clear_error();
    }
}

#[test]
fn a_config_the_agent_refuses_is_reported_in_its_words() {
    if docker::podman_or_skip() {
        scenarios::a_config_the_agent_refuses_is_reported_in_its_words();
    }
}

#[test]
fn a_crash_looping_registrator_is_reported_by_its_probe() {
    if docker::podman_or_skip() {
        scenarios::a_crash_looping_registrator_is_reported_by_its_probe();
    }
}

#[test]
fn a_missing_image_is_pulled_with_progress_and_runs() {
    if docker::podman_or_skip() {
        scenarios::a_missing_image_is_pulled_with_progress_and_runs();
    }
}

#[test]
fn remove_deletes_only_labelled_containers_and_keeps_the_data_dir() {
    if docker::podman_or_skip() {
        scenarios::remove_deletes_only_labelled_containers_and_keeps_the_data_dir();
    }
}

/// The nameserver a container got: its resolv.conf, read on the host
/// (rootful Podman keeps it under its storage).
fn nameservers(name: &str) -> Vec<String> {
    let c = docker::inspect_container(name).unwrap();
    let path = c["ResolvConfPath"].as_str().unwrap().to_string();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(String::from)
        .collect()
}

#[test]
fn docker_dns_drop_in_reaches_containers_created_after_the_api_service_restarts() {
    if !docker::podman_or_skip() {
        return;
    }
    let h = Host::new("podmandns");
    // Podman reads only /etc/containers/containers.conf.d: the drop-in goes
    // there, under a name of this test's.
    let dropin = format!(
        "/etc/containers/containers.conf.d/nodeprep-test-{}.conf",
        std::process::id()
    );
    h.configure_with(
        docker::CONSUL_IMAGE,
        "",
        &format!("podman_conf = \"{dropin}\"\n"),
    );
    let others = docker::Containers::with_prefix("nodeprep-it-podmandns-");
    let start = |what: &str, network: &str| {
        let name = others.add(what);
        docker::docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            docker::WORKLOAD_IMAGE,
        ]);
        name
    };
    let plan = h.run(&["plan", "--only", "docker-dns"]);
    let apply = h.run(&["apply", "--only", "docker-dns"]);
    common::assert_plan_is_apply(&plan, &apply);
    apply.expect_code(0);
    let (status, detail) = status_of(&apply, "docker-dns");
    assert_eq!(status, "changed", "{}", apply.stdout);
    // No systemd here: nodeprep cannot restart the API service, and says so.
    assert!(
        detail.contains("restart the Podman API service yourself"),
        "{detail}"
    );
    assert!(std::fs::read_to_string(&dropin)
        .unwrap()
        .contains(&format!("dns_servers = [\"{}\"]", h.link.0)));
    let check = h.run(&["check", "--only", "docker-dns"]);
    check.expect_code(0);
    assert!(
        status_of(&check, "docker-dns")
            .1
            .contains("engine: Podman "),
        "{}",
        check.stdout
    );

    // The running API service read containers.conf when it started: a
    // container created through it now does not get the link address.
    let before = start("before", "bridge");
    assert!(
        !nameservers(&before).contains(&h.link.0),
        "{:?}",
        nameservers(&before)
    );
    docker::restart_podman_service();
    let after = start("after", "bridge");
    assert_eq!(nameservers(&after), std::slice::from_ref(&h.link.0));
    // Containers that existed keep theirs; unlike Docker, Podman gives
    // host-network containers the setting too.
    assert!(!nameservers(&before).contains(&h.link.0));
    let host_net = start("hostnet", "host");
    assert_eq!(nameservers(&host_net), std::slice::from_ref(&h.link.0));

    let dry = h.run(&["remove", "--dry-run", "--only", "docker-dns"]);
    let removed = h.run(&["remove", "--only", "docker-dns"]);
    common::assert_plan_is_apply(&dry, &removed);
    removed.expect_code(0);
    assert!(!std::path::Path::new(&dropin).exists());
    docker::restart_podman_service();
}

#[test]
fn a_stated_engine_is_checked_against_the_one_that_answers() {
    if !docker::podman_or_skip() {
        return;
    }
    let h = Host::new("mismatch");
    let config = h.path("nodeprep.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "engine = \"podman\"\n",
        &format!(
            "engine = \"docker\"\nsocket = \"{}\"\n",
            docker::PODMAN_SOCKET
        ),
    );
    std::fs::write(&config, text).unwrap();
    let run = h.run(&["apply", "--only", "consul-config,consul,registrator"]);
    run.expect_code(1);
    let (status, detail) = status_of(&run, "consul");
    assert_eq!(status, "failed");
    assert!(
        detail.contains("docker.engine = \"docker\", but Podman ")
            && detail.contains("answers on /run/podman/podman.sock"),
        "{detail}"
    );
    assert!(docker::inspect_container(&h.consul).is_none());
}

#[test]
fn facts_name_podman_and_its_socket() {
    if !docker::podman_or_skip() {
        return;
    }
    let h = Host::new("facts");
    let run = h.run(&["facts"]);
    run.expect_code(0);
    let doc = run.json();
    let engine = doc["docker_engine"].as_str().unwrap();
    assert!(
        engine.starts_with("Podman ") && engine.ends_with("at /run/podman/podman.sock (auto)"),
        "{engine}"
    );
    assert_eq!(doc["docker_socket"], docker::PODMAN_SOCKET);
}
