//! NetworkManager, through `nmcli`: its supported command-line interface to
//! the daemon's D-Bus API (as `systemctl` is to systemd's), and
//! `NetworkManager --print-config` for its merged configuration.
//!
//! Two things `nmcli` does not say through its exit status and this module
//! checks itself: `nmcli connection load FILE` exits 0 when NetworkManager
//! refuses the file (bad permissions, bad syntax: "Could not load file"), and
//! a keyfile value NetworkManager does not understand is dropped with a log
//! line only (NetworkManager 1.42 drops `dns=169.254.1.1:8600`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::command::{output, run};

/// A NetworkManager version, `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split(['.', '-', '~', '+']);
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let major = next()?;
        let minor = next()?;
        Some(Version(major, minor, next().unwrap_or(0)))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What `nmcli general` says about the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// `nmcli` is not installed.
    Missing,
    /// Installed, but no daemon answers (why, as nmcli put it).
    NotRunning(String),
    Running(Version),
}

/// The daemon's state and version (`nmcli -t -f RUNNING,VERSION general`).
pub fn daemon() -> Result<Daemon> {
    let out = match Command::new("nmcli")
        .args(["-t", "-f", "RUNNING,VERSION", "general"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Daemon::Missing),
        Err(e) => return Err(e).context("cannot run `nmcli general`"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "Error: NetworkManager is not running." (exit 8), or no D-Bus.
        return Ok(Daemon::NotRunning(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let fields = split_terse(stdout.trim());
    match fields.as_slice() {
        [running, version] if running == "running" => Version::parse(version)
            .map(Daemon::Running)
            .with_context(|| format!("cannot read NetworkManager's version from {version:?}")),
        [state, _] => Ok(Daemon::NotRunning(format!("NetworkManager is {state}"))),
        _ => bail!("unexpected answer from `nmcli general`: {stdout:?}"),
    }
}

/// A connection profile NetworkManager has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub uuid: String,
    pub name: String,
    /// The file it was loaded from (none for in-memory profiles).
    pub filename: Option<PathBuf>,
    /// The device it is active on, if active.
    pub device: Option<String>,
    /// "activated", "activating", ... when active.
    pub state: Option<String>,
}

/// Every profile NetworkManager has loaded, with its activation.
pub fn profiles() -> Result<Vec<Profile>> {
    let out = output(Command::new("nmcli").args([
        "-t",
        "-f",
        "UUID,NAME,FILENAME,DEVICE,STATE",
        "connection",
        "show",
    ]))?;
    Ok(out.lines().filter_map(parse_profile).collect())
}

fn parse_profile(line: &str) -> Option<Profile> {
    let f = split_terse(line);
    let [uuid, name, filename, device, state] = f.as_slice() else {
        return None;
    };
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    Some(Profile {
        uuid: uuid.clone(),
        name: name.clone(),
        filename: some(filename).map(PathBuf::from),
        device: some(device),
        state: some(state),
    })
}

/// Splits a line of `nmcli -t` output: fields separated by ':', with ':' and
/// '\' inside values escaped by a backslash.
fn split_terse(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Makes NetworkManager read `path` again: a new or changed profile is
/// loaded, the profile of a file that is gone is forgotten (which
/// deactivates it). Verifies the outcome, since nmcli exits 0 either way.
pub fn load(path: &Path, uuid: &str) -> Result<()> {
    let out = Command::new("nmcli")
        .args(["connection", "load"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `nmcli connection load`")?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let exists = path.exists();
    let loaded = profiles()?
        .into_iter()
        .any(|p| p.uuid == uuid && p.filename.as_deref() == Some(path));
    if !out.status.success() || loaded != exists {
        let why = if stderr.is_empty() {
            "see NetworkManager's log (journalctl -u NetworkManager)".to_string()
        } else {
            stderr
        };
        if exists {
            bail!(
                "NetworkManager did not load {} ({why}); it needs the file owned by root with mode 0600",
                path.display()
            );
        }
        bail!(
            "NetworkManager still has the profile of {} ({why})",
            path.display()
        );
    }
    Ok(())
}

/// Activates a profile and waits until it is active (or failed).
pub fn up(uuid: &str) -> Result<()> {
    run(Command::new("nmcli").args(["-w", "30", "connection", "up", "uuid", uuid]))
}

/// Deactivates a profile.
pub fn down(uuid: &str) -> Result<()> {
    run(Command::new("nmcli").args(["-w", "30", "connection", "down", "uuid", uuid]))
}

/// Makes the daemon read its configuration files (`conf.d`) again.
pub fn reload_conf() -> Result<()> {
    run(Command::new("nmcli").args(["general", "reload", "conf"]))
}

/// `keyfile.unmanaged-devices` as NetworkManager merges it from its
/// configuration files (`NetworkManager --print-config`, which reads the
/// files and needs no running daemon).
pub fn unmanaged_devices() -> Result<Vec<String>> {
    let out = output(Command::new("NetworkManager").arg("--print-config"))?;
    Ok(config_value(&out, "keyfile", "unmanaged-devices")
        .map(|v| {
            v.split([',', ';'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default())
}

/// The value of `key` in `[section]` of a printed configuration.
fn config_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    let mut value = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name == section;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    value = Some(v.trim().to_string());
                }
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(Version::parse("1.42.4"), Some(Version(1, 42, 4)));
        assert_eq!(Version::parse("1.58.1-1"), Some(Version(1, 58, 1)));
        assert_eq!(Version::parse("1.52"), Some(Version(1, 52, 0)));
        assert!(Version(1, 58, 1) > Version(1, 52, 0));
        assert!(Version(1, 100, 0) > Version(1, 58, 1));
        assert_eq!(Version::parse("x"), None);
    }

    #[test]
    fn terse_lines_unescape_colons() {
        assert_eq!(
            parse_profile("u-1:dummy0:/etc/NetworkManager/system-connections/a\\:b.nmconnection:dummy0:activated"),
            Some(Profile {
                uuid: "u-1".into(),
                name: "dummy0".into(),
                filename: Some("/etc/NetworkManager/system-connections/a:b.nmconnection".into()),
                device: Some("dummy0".into()),
                state: Some("activated".into()),
            })
        );
        let p = parse_profile("u-2:Wired connection 1:::").unwrap();
        assert_eq!((p.filename, p.device, p.state), (None, None, None));
    }

    #[test]
    fn merged_config_values_are_read_from_their_section() {
        let text = "[main]\nplugins=keyfile\n\n[keyfile]\n# unmanaged-devices=x\nunmanaged-devices=interface-name:eth9,interface-name:dummy0\n\n[device]\nx=1\n";
        assert_eq!(
            config_value(text, "keyfile", "unmanaged-devices").as_deref(),
            Some("interface-name:eth9,interface-name:dummy0")
        );
        assert_eq!(config_value(text, "main", "unmanaged-devices"), None);
    }
}
