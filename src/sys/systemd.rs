//! systemd units, through `systemctl` and `networkctl`: the supported
//! interface to a running systemd (its D-Bus API would add a client stack for
//! four verbs).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::command::{describe, run};

/// A running systemd. Absent on hosts booted without it (containers, the
/// busybox test VM), where unit verbs cannot work.
#[derive(Debug, Clone, Copy)]
pub struct Systemd;

impl Systemd {
    /// systemd's own test for "booted with systemd" (sd_booted(3)).
    pub fn detect() -> Option<Systemd> {
        Path::new("/run/systemd/system").is_dir().then_some(Systemd)
    }

    pub fn is_enabled(&self, unit: &str) -> Result<bool> {
        status(Command::new("systemctl").args(["is-enabled", "--quiet", unit]))
    }

    pub fn is_active(&self, unit: &str) -> Result<bool> {
        status(Command::new("systemctl").args(["is-active", "--quiet", unit]))
    }

    /// Enables a unit for the next boot without starting it now.
    pub fn enable(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["enable", unit]))
    }

    pub fn disable(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["disable", unit]))
    }

    pub fn start(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["start", unit]))
    }

    pub fn stop(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["stop", unit]))
    }

    pub fn restart(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["restart", unit]))
    }

    /// Restarts a unit if it is running; leaves a stopped one stopped.
    pub fn try_restart(&self, unit: &str) -> Result<()> {
        run(Command::new("systemctl").args(["try-restart", unit]))
    }

    /// The main process of an active service, or `None`.
    pub fn main_pid(&self, unit: &str) -> Result<Option<u32>> {
        let out = Command::new("systemctl")
            .args(["show", "-p", "MainPID", "--value", unit])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `systemctl show {unit}`"))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&p| p > 0))
    }

    /// Makes a running systemd-networkd re-read its .netdev/.network files.
    pub fn reload_networkd(&self) -> Result<()> {
        run(Command::new("networkctl").arg("reload"))
            .context("networkctl talks to systemd-networkd over D-Bus: is dbus running?")
    }
}

fn status(cmd: &mut Command) -> Result<bool> {
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    Ok(st.success())
}
