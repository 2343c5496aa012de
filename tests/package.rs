//! The Debian package (`packaging/build-deb.sh`, cargo-deb): what `dpkg -c`
//! lists, its control data and conffile, what its maintainer scripts do on
//! install, upgrade and removal, lintian's verdict, and that the man page
//! renders and bash completes from the files it ships.
//!
//! The package is built from this test's binary (`--binary`, `--fast`), or
//! taken from `NODEPREP_TEST_DEB` when set: `tests/run-all.sh` builds the
//! real one with the README's command and checks it here.
//!
//! Prerequisites: cargo-deb at the version `packaging/build-deb.sh` pins,
//! dpkg-deb, lintian, man-db and bash-completion (`tests/setup.sh` installs
//! them). Missing: a failure under `CI=true`, a loud skip elsewhere.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pinned cargo-deb version, read from the build script.
fn pinned_cargo_deb() -> String {
    let script = std::fs::read_to_string(repo().join("packaging/build-deb.sh")).unwrap();
    script
        .lines()
        .find_map(|l| l.strip_prefix("CARGO_DEB_VERSION="))
        .expect("CARGO_DEB_VERSION= in packaging/build-deb.sh")
        .to_string()
}

/// Why the package cannot be built or checked here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if std::env::var_os("NODEPREP_TEST_DEB").is_none() {
        let version = Command::new("cargo").args(["deb", "--version"]).output();
        let want = pinned_cargo_deb();
        let ok = version.is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("cargo-deb {want}")
        });
        if !ok {
            return Some(format!(
                "cargo-deb {want} (cargo install cargo-deb --version {want} --locked)"
            ));
        }
    }
    for (tool, package) in [
        ("dpkg-deb", "dpkg"),
        ("lintian", "lintian"),
        ("man", "man-db"),
    ] {
        if !have(tool) {
            return Some(format!("{tool} (package {package})"));
        }
    }
    if !Path::new("/usr/share/bash-completion/bash_completion").exists() {
        return Some("bash-completion (package bash-completion)".into());
    }
    None
}

/// The package under test and the directory it is unpacked in, made once.
struct Built {
    deb: PathBuf,
    /// `dpkg-deb -R`: the files under their paths, control files in DEBIAN/.
    tree: PathBuf,
    _dir: tempfile::TempDir,
}

fn package() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(why) = missing_prerequisite() {
                common::prerequisite_missing(&why);
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let deb = match std::env::var_os("NODEPREP_TEST_DEB") {
                Some(deb) => PathBuf::from(deb),
                None => {
                    let out = run(Command::new("bash")
                        .arg(repo().join("packaging/build-deb.sh"))
                        .args(["--binary", common::BIN, "--fast", "--out"])
                        .arg(dir.path()));
                    let line = out.lines().last().unwrap_or_default();
                    PathBuf::from(line.strip_prefix("DEB=").expect("DEB=<path>"))
                }
            };
            let tree = dir.path().join("tree");
            run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&tree));
            Some(Built {
                deb,
                tree,
                _dir: dir,
            })
        })
        .as_ref()
}

/// Every file of the package: path -> (mode, owner).
fn listing(deb: &Path) -> BTreeMap<String, String> {
    let text = run(Command::new("dpkg").arg("-c").arg(deb));
    text.lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').to_string();
            (path, format!("{} {}", fields[0], fields[1]))
        })
        .collect()
}

#[test]
fn dpkg_lists_every_file() {
    let Some(p) = package() else { return };
    let files = listing(&p.deb);
    let want = [
        ("/usr/bin/nodeprep", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/nodeprep.service", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system/nodeprep-check.service",
            "-rw-r--r--",
        ),
        ("/usr/lib/systemd/system/nodeprep-check.timer", "-rw-r--r--"),
        ("/usr/share/man/man8/nodeprep.8.gz", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/nodeprep",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_nodeprep", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/nodeprep.fish",
            "-rw-r--r--",
        ),
        ("/etc/nodeprep/nodeprep.toml", "-rw-r--r--"),
        ("/usr/share/doc/nodeprep/README.md", "-rw-r--r--"),
        ("/usr/share/doc/nodeprep/copyright", "-rw-r--r--"),
        ("/usr/share/doc/nodeprep/changelog.Debian.gz", "-rw-r--r--"),
        (
            "/usr/share/doc/nodeprep/examples/nodeprep.toml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nodeprep/examples/nodeprep-server.toml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nodeprep/examples/cloud-init.yaml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nodeprep/examples/cloud-init-resolved.yaml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nodeprep/examples/cloud-init-podman.yaml",
            "-rw-r--r--",
        ),
        ("/usr/share/lintian/overrides/nodeprep", "-rw-r--r--"),
    ];
    let got: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, m)| (p.as_str(), m.split(' ').next().unwrap()))
        .collect();
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "dpkg -c {}", p.deb.display());
    assert!(files.values().all(|m| m.ends_with(" 0/0")), "{files:?}");

    // The shipped files are those of the repository and of the binary.
    let same = |shipped: &str, source: &Path| {
        assert_eq!(
            std::fs::read(p.tree.join(shipped)).unwrap(),
            std::fs::read(source).unwrap(),
            "{shipped} differs from {}",
            source.display()
        );
    };
    for unit in [
        "nodeprep.service",
        "nodeprep-check.service",
        "nodeprep-check.timer",
    ] {
        same(
            &format!("usr/lib/systemd/system/{unit}"),
            &repo().join("units").join(unit),
        );
    }
    same(
        "usr/share/doc/nodeprep/README.md",
        &repo().join("README.md"),
    );
    for example in [
        "nodeprep.toml",
        "nodeprep-server.toml",
        "cloud-init.yaml",
        "cloud-init-resolved.yaml",
        "cloud-init-podman.yaml",
    ] {
        same(
            &format!("usr/share/doc/nodeprep/examples/{example}"),
            &repo().join("configs").join(example),
        );
    }
    let bin = p.tree.join("usr/bin/nodeprep");
    let completion = run(Command::new(&bin).args(["completions", "bash"]));
    assert_eq!(
        std::fs::read_to_string(
            p.tree
                .join("usr/share/bash-completion/completions/nodeprep")
        )
        .unwrap(),
        completion
    );
    let file = run(Command::new("file").arg(&bin));
    assert!(file.contains("static"), "not a static binary: {file}");
}

#[test]
fn control_data_and_conffile() {
    let Some(p) = package() else { return };
    let control = std::fs::read_to_string(p.tree.join("DEBIAN/control")).unwrap();
    for line in [
        "Package: nodeprep",
        "Architecture: amd64",
        "Section: admin",
        "Depends: systemd",
        "Recommends: dnsmasq | systemd-resolved, docker.io | docker-ce | podman",
    ] {
        assert!(
            control.lines().any(|l| l == line),
            "no '{line}' in:\n{control}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.tree.join("DEBIAN/conffiles")).unwrap(),
        "/etc/nodeprep/nodeprep.toml\n"
    );
    // The conffile is the commented default, and it is valid.
    let default = run(Command::new(p.tree.join("usr/bin/nodeprep")).args(["config", "default"]));
    let conffile = p.tree.join("etc/nodeprep/nodeprep.toml");
    assert_eq!(std::fs::read_to_string(&conffile).unwrap(), default);
    run(Command::new(common::BIN)
        .args(["config", "validate"])
        .arg(&conffile));
}

/// Runs a maintainer script with `deb-systemd-helper`, `deb-systemd-invoke`
/// and `systemctl` replaced by stubs that log their arguments and succeed
/// (`was-enabled` then says yes, as on a first install); returns the log,
/// one command a line.
fn maintainer_script(p: &Built, script: &str, args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    for tool in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let stub = dir.path().join(tool);
        std::fs::write(
            &stub,
            format!("#!/bin/sh\necho \"{tool} $*\" >>{}\n", log.display()),
        )
        .unwrap();
        run(Command::new("chmod").arg("755").arg(&stub));
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("sh")
        .arg(p.tree.join("DEBIAN").join(script))
        .args(args)
        .env("PATH", path));
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("deb-systemd-helper --quiet was-enabled"))
        .map(String::from)
        .collect()
}

#[test]
fn maintainer_scripts_enable_the_units_and_start_only_the_timer() {
    let Some(p) = package() else { return };
    let systemd_running = Path::new("/run/systemd/system").is_dir();
    let mut start = vec![
        "systemctl --system daemon-reload".to_string(),
        "deb-systemd-invoke start nodeprep-check.timer".to_string(),
    ];
    if !systemd_running {
        // An image build or a chroot: nothing is started.
        start.clear();
    }
    let enable = [
        "deb-systemd-helper unmask nodeprep.service",
        "deb-systemd-helper enable nodeprep.service",
        "deb-systemd-helper unmask nodeprep-check.timer",
        "deb-systemd-helper enable nodeprep-check.timer",
    ];
    let want: Vec<String> = enable.iter().map(|s| s.to_string()).chain(start).collect();
    // A first install, and an upgrade: the same; nodeprep.service is never
    // started or restarted (installing changes nothing on the host).
    assert_eq!(maintainer_script(p, "postinst", &["configure"]), want);
    assert_eq!(
        maintainer_script(p, "postinst", &["configure", "0.0.1-1"]),
        want
    );
    // Upgrade: nothing is stopped.
    assert_eq!(
        maintainer_script(p, "prerm", &["upgrade", "0.1.0-2"]),
        Vec::<String>::new()
    );
    // Removal stops the units (that undoes nothing on the host: the boot
    // unit has no ExecStop) and masks them until purge.
    let prerm_remove = maintainer_script(p, "prerm", &["remove"]);
    if systemd_running {
        assert_eq!(
            prerm_remove,
            [
                "deb-systemd-invoke stop nodeprep-check.service nodeprep-check.timer",
                "deb-systemd-invoke stop nodeprep.service"
            ]
        );
    } else {
        assert!(prerm_remove.is_empty(), "{prerm_remove:?}");
    }
    let postrm = maintainer_script(p, "postrm", &["remove"]);
    for unit in ["nodeprep.service", "nodeprep-check.timer"] {
        assert!(
            postrm.contains(&format!("deb-systemd-helper mask {unit}")),
            "{postrm:?}"
        );
    }
    let purge = maintainer_script(p, "postrm", &["purge"]);
    for unit in ["nodeprep.service", "nodeprep-check.timer"] {
        assert!(
            purge.contains(&format!("deb-systemd-helper purge {unit}")),
            "{purge:?}"
        );
    }
    // No script runs nodeprep itself: the package never touches the layout.
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(p.tree.join("DEBIAN").join(script)).unwrap();
        let code: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            !code.iter().any(|l| l.contains("/usr/bin/nodeprep")
                || l.contains("nodeprep apply")
                || l.contains("nodeprep remove")),
            "{script} runs nodeprep:\n{text}"
        );
    }
}

#[test]
fn lintian_finds_no_error_and_no_unjustified_warning() {
    let Some(p) = package() else { return };
    let out = Command::new("bash")
        .arg(repo().join("packaging/lintian.sh"))
        .arg(&p.deb)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "lintian:\n{text}");
    // Every override in the file is used (lintian reports unused ones as
    // info, mismatched ones as warnings).
    assert!(
        !text.contains("unused-override") && !text.contains("mismatched-override"),
        "{text}"
    );
}

#[test]
fn man_page_renders_and_bash_completes() {
    let Some(p) = package() else { return };
    let page = p.tree.join("usr/share/man/man8/nodeprep.8.gz");
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    // Without a terminal man still overstrikes bold text ("N\bN"): drop
    // the overstruck characters.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    assert!(out.status.success(), "man -l {}", page.display());
    assert!(
        out.stderr.is_empty(),
        "groff warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "NODEPREP(8)",
        "nodeprep apply",
        "nodeprep completions",
        "EXIT STATUS",
        "/etc/nodeprep/nodeprep.toml",
    ] {
        assert!(text.contains(needle), "man page lacks '{needle}':\n{text}");
    }

    // bash-completion loads the script from where the package puts it and
    // completes `nodeprep ch` to `check`.
    let completions = p.tree.join("usr/share/bash-completion/completions");
    let script = format!(
        r#"
        . /usr/share/bash-completion/bash_completion
        . {dir}/nodeprep
        fn=$(complete -p nodeprep | sed -n 's/.*-F \([^ ]*\).*/\1/p')
        COMP_WORDS=(nodeprep ch); COMP_CWORD=1; COMP_LINE="nodeprep ch"; COMP_POINT=${{#COMP_LINE}}
        "$fn" nodeprep ch nodeprep
        printf '%s\n' "${{COMPREPLY[@]}}"
        "#,
        dir = completions.display()
    );
    let out = run(Command::new("bash").args(["-c", &script]));
    assert_eq!(out.trim(), "check", "completions of 'nodeprep ch'");
}
