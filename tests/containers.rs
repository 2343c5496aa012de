//! The `consul` and `registrator` resources against a real dockerd, with
//! stand-in images (tests/docker/, standins/): the scenarios themselves are
//! in `tests/common/container_scenarios.rs`, shared with `tests/podman.rs`,
//! which runs them against Podman. Nothing here is a result about real
//! Consul.

mod common;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/container_scenarios.rs"]
mod scenarios;

#[test]
fn fresh_apply_creates_both_and_a_second_changes_nothing() {
    if docker::docker_or_skip() {
        scenarios::fresh_apply_creates_both_and_a_second_changes_nothing();
    }
}

#[test]
fn stopped_registrator_is_drift_and_apply_starts_it() {
    if docker::docker_or_skip() {
        scenarios::stopped_registrator_is_drift_and_apply_starts_it();
    }
}

#[test]
fn changed_image_recreates_and_removed_container_comes_back() {
    if docker::docker_or_skip() {
        scenarios::changed_image_recreates_and_removed_container_comes_back();
    }
}

#[test]
fn cluster_setting_change_rewrites_agent_json_and_restarts_consul() {
    if docker::docker_or_skip() {
        scenarios::cluster_setting_change_rewrites_agent_json_and_restarts_consul();
    }
}

#[test]
fn gossip_key_file_is_0640_and_never_printed() {
    if docker::docker_or_skip() {
        scenarios::gossip_key_file_is_0640_and_never_printed();
    }
}

#[test]
fn dockerd_unreachable_fails_the_containers_only() {
    // Needs no engine: the socket points where none answers.
    scenarios::dockerd_unreachable_fails_the_containers_only();
}

#[test]
fn an_unmanaged_container_is_refused_and_left_alone() {
    if docker::docker_or_skip() {
        scenarios::an_unmanaged_container_is_refused_and_left_alone();
    }
}

#[test]
fn an_image_that_cannot_be_pulled_is_a_clear_error() {
    if docker::docker_or_skip() {
        scenarios::an_image_that_cannot_be_pulled_is_a_clear_error();
    }
}

#[test]
fn a_config_the_agent_refuses_is_reported_in_its_words() {
    if docker::docker_or_skip() {
        scenarios::a_config_the_agent_refuses_is_reported_in_its_words();
    }
}

#[test]
fn a_crash_looping_registrator_is_reported_by_its_probe() {
    if docker::docker_or_skip() {
        scenarios::a_crash_looping_registrator_is_reported_by_its_probe();
    }
}

#[test]
fn a_missing_image_is_pulled_with_progress_and_runs() {
    if docker::docker_or_skip() {
        scenarios::a_missing_image_is_pulled_with_progress_and_runs();
    }
}

#[test]
fn remove_deletes_only_labelled_containers_and_keeps_the_data_dir() {
    if docker::docker_or_skip() {
        scenarios::remove_deletes_only_labelled_containers_and_keeps_the_data_dir();
    }
}

/// With both engines answering (on this machine a Podman service runs
/// beside dockerd when tests/podman.rs ran), `auto` takes Docker's socket
/// first; `facts` says which engine and why.
#[test]
fn auto_takes_docker_first_and_facts_say_so() {
    if !docker::docker_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(&config, "[consul]\nbind_addr = \"192.0.2.10\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&config)
        .args(["--format", "json", "facts"])
        .output()
        .unwrap();
    let run = common::Run::from(out);
    run.expect_code(0);
    let doc = run.json();
    let engine = doc["docker_engine"].as_str().unwrap();
    assert!(
        engine.starts_with("Docker ")
            && engine.contains(
                "at /var/run/docker.sock (auto: the first of /var/run/docker.sock or /run/podman/podman.sock to answer)"
            ),
        "{engine}"
    );
    assert_eq!(doc["docker_socket"], "/var/run/docker.sock");
}
