//! systemd-resolved's per-link DNS settings, through `resolvectl`: the
//! supported command-line interface to resolved's D-Bus API, as `systemctl`
//! is to systemd's (a D-Bus client stack for six verbs would outweigh them).
//!
//! Settings made here live as long as the link (resolved keeps them across
//! its own restarts); systemd-networkd or NetworkManager set the same ones
//! from their files at every boot.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::command::{output, run};

/// What resolved routes through one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkDns {
    /// Servers as resolved prints them (`169.254.1.1`, `169.254.1.1:8600`).
    pub servers: Vec<String>,
    /// Domains; routing-only ones start with `~`.
    pub domains: Vec<String>,
    /// Whether the link is used for names outside its domains.
    pub default_route: bool,
}

/// resolved's version: the number of the `systemd NNN` line.
pub fn version() -> Result<u32> {
    let out = output(Command::new("resolvectl").arg("--version"))?;
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("systemd "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the version from `resolvectl --version`: {out:?}"))
}

/// The link's DNS settings, or `None` when resolved does not know the link.
pub fn link(ifname: &str) -> Result<Option<LinkDns>> {
    let value = |verb: &str| -> Result<Option<Vec<String>>> {
        let out = Command::new("resolvectl")
            .args([verb, ifname])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `resolvectl {verb} {ifname}`"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // "Failed to resolve interface "dummy0": No such device"
            if err.contains("No such device") || err.contains("Unknown interface") {
                return Ok(None);
            }
            bail!("`resolvectl {verb} {ifname}` failed: {}", err.trim());
        }
        Ok(Some(parse_value(&String::from_utf8_lossy(&out.stdout))))
    };
    let Some(servers) = value("dns")? else {
        return Ok(None);
    };
    let domains = value("domain")?.unwrap_or_default();
    let default_route = value("default-route")?
        .unwrap_or_default()
        .first()
        .is_some_and(|v| v == "yes");
    Ok(Some(LinkDns {
        servers,
        domains,
        default_route,
    }))
}

pub fn set_servers(ifname: &str, servers: &[String]) -> Result<()> {
    run(Command::new("resolvectl")
        .arg("dns")
        .arg(ifname)
        .args(servers))
}

pub fn set_domains(ifname: &str, domains: &[String]) -> Result<()> {
    run(Command::new("resolvectl")
        .arg("domain")
        .arg(ifname)
        .args(domains))
}

pub fn set_default_route(ifname: &str, on: bool) -> Result<()> {
    run(Command::new("resolvectl").args(["default-route", ifname, if on { "yes" } else { "no" }]))
}

/// Drops every DNS setting made for the link through resolved's API.
pub fn revert(ifname: &str) -> Result<()> {
    run(Command::new("resolvectl").args(["revert", ifname]))
}

/// The words after `Link N (name):` in resolvectl's one-line answers.
fn parse_value(out: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.split_once("):").map(|(_, v)| v))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolvectl_one_line_answers() {
        assert_eq!(
            parse_value("Link 5 (dummy0): 169.254.1.1:8600\n"),
            vec!["169.254.1.1:8600"]
        );
        assert_eq!(parse_value("Link 5 (dummy0): ~consul\n"), vec!["~consul"]);
        assert_eq!(parse_value("Link 5 (dummy0):\n"), Vec::<String>::new());
        assert_eq!(
            parse_value("Link 3 (uplink): 192.0.2.53 192.0.2.54\n"),
            vec!["192.0.2.53", "192.0.2.54"]
        );
    }
}
