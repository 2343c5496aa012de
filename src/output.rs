//! Rendering reports for people (one line per resource, like Ansible's
//! ok/changed) and for machines (exactly one JSON document on stdout).

use std::io::{self, Write};

use crate::cli::Format;
use crate::exit::Fatal;
use crate::facts::Facts;
use crate::report::{Report, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub fn report(r: &Report, format: Format, verbosity: Verbosity) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)
        }
        Format::Human => {
            for res in &r.resources {
                if verbosity == Verbosity::Quiet
                    && matches!(res.status, Status::Ok | Status::Skipped)
                {
                    continue;
                }
                writeln!(
                    out,
                    "{:<8} {:<14} {}",
                    res.status.as_str(),
                    res.id,
                    res.detail
                )?;
                if let Some(diff) = &res.diff {
                    for line in diff.lines() {
                        writeln!(out, "    {line}")?;
                    }
                }
            }
            let s = &r.summary;
            if verbosity != Verbosity::Quiet || s.failed + s.drift > 0 {
                writeln!(
                    out,
                    "{}: {} ok, {} changed, {} drift, {} failed, {} skipped",
                    r.command, s.ok, s.changed, s.drift, s.failed, s.skipped
                )?;
            }
            Ok(())
        }
    }
}

/// The JSON document for a run that ended before any resource was looked at
/// (bad configuration, not root, lock held).
pub fn fatal(command: &str, fatal: &Fatal) {
    let doc = serde_json::json!({
        "command": command,
        "version": env!("CARGO_PKG_VERSION"),
        "error": format!("{:#}", fatal.error),
        "exit_code": fatal.exit as u8,
    });
    println!("{doc}");
}

pub fn facts(f: &Facts, format: Format) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, f)?;
            writeln!(out)
        }
        Format::Human => {
            let value = serde_json::to_value(f).map_err(io::Error::other)?;
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "command" | "version"))
                {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "unknown".to_string(),
                        other => other.to_string(),
                    };
                    writeln!(out, "{k:<24} {v}")?;
                }
            }
            Ok(())
        }
    }
}
