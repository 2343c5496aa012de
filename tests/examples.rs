//! The operator-facing examples are valid for the real tools that read them:
//! `cloud-init schema` for the user data, `vagrant validate` for the
//! Vagrantfile, and `nodeprep config validate` for every nodeprep config they
//! carry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tool's stdout and stderr together, for assertions and messages.
fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn validate_toml(text: &str, origin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodeprep.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(common::BIN)
        .args(["config", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{origin}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML examples in configs/");
    files
}

#[test]
fn cloud_init_examples_pass_cloud_init_schema() {
    if !have("cloud-init") {
        return common::prerequisite_missing("cloud-init (package cloud-init)");
    }
    for file in yaml_files() {
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&file)
            .output()
            .unwrap();
        let text = combined(&out);
        assert!(
            out.status.success() && text.contains("Valid cloud-config"),
            "{}: {text}",
            file.display()
        );
    }
    // The check can fail: a wrong type is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "#cloud-config\npackages: 3\n").unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "cloud-init schema accepted packages: 3"
    );
}

#[test]
fn nodeprep_configs_inside_the_user_data_validate() {
    // cloud-init's own YAML library (python3-yaml, a dependency of cloud-init).
    if !have("cloud-init") {
        return common::prerequisite_missing("cloud-init (package cloud-init, for python3-yaml)");
    }
    let script = "import sys, yaml, json\nd = yaml.safe_load(open(sys.argv[1]))\nprint(json.dumps([f['content'] for f in d.get('write_files', []) if f['path'] == '/etc/nodeprep/nodeprep.toml']))";
    for file in yaml_files() {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let contents: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            !contents.is_empty(),
            "{} writes no /etc/nodeprep/nodeprep.toml",
            file.display()
        );
        for c in contents {
            validate_toml(&c, &file.display().to_string());
        }
    }
}

#[test]
fn vagrantfile_passes_vagrant_validate_and_its_configs_validate() {
    if !have("vagrant") {
        return common::prerequisite_missing("vagrant (package vagrant)");
    }
    // No provider (VirtualBox, libvirt) runs here: validate the Vagrantfile
    // itself, which evaluates it (and so parses configs/cloud-init.yaml).
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(repo())
        .output()
        .unwrap();
    let text = combined(&out);
    assert!(
        out.status.success() && text.contains("validated successfully"),
        "{text}"
    );

    // Each host's nodeprep.toml, from its heredoc.
    let vagrantfile = std::fs::read_to_string(repo().join("Vagrantfile")).unwrap();
    let server_ip = vagrantfile
        .lines()
        .find_map(|l| l.strip_prefix("SERVER_IP = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap();
    let mut configs = 0;
    let mut current: Option<String> = None;
    for line in vagrantfile.lines() {
        match &mut current {
            None if line.contains("<<~TOML") => current = Some(String::new()),
            Some(text) if line.trim() == "TOML" => {
                validate_toml(&text.replace("#{SERVER_IP}", &server_ip), "Vagrantfile");
                configs += 1;
                current = None;
            }
            Some(text) => {
                text.push_str(line.trim_start());
                text.push('\n');
            }
            None => {}
        }
    }
    assert_eq!(configs, 3, "expected a config per host");
}
