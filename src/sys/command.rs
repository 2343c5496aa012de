//! Running the host's own tools (systemctl, resolvectl, nmcli): stdin
//! closed, stdout returned, a failure named by the command line and its
//! stderr.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `cmd` and returns its stdout; a non-zero exit is an error carrying
/// the command line, the status and stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let described = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {described}"))?;
    if !out.status.success() {
        bail!(
            "{described} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`output`], for a command whose stdout does not matter.
pub fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(|_| ())
}

/// The command line, quoted for messages: `` `systemctl is-active x` ``.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", parts.join(" "))
}
