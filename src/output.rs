//! Rendering reports: for people (one line per resource and probe, like
//! Ansible's ok/changed, coloured on a terminal), for machines (exactly one
//! JSON document on stdout), and for Prometheus (text exposition for
//! node_exporter's textfile collector).

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use crate::cli::Format;
use crate::exit::Fatal;
use crate::facts::Facts;
use crate::report::{Report, ResourceReport, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub fn report(r: &Report, format: Format, verbosity: Verbosity) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let written = match format {
        Format::Json => {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)
        }
        Format::Prometheus => out.write_all(prometheus(r).as_bytes()),
        Format::Human => {
            // NO_COLOR (no-color.org) and pipes get plain text.
            let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            out.write_all(human(r, verbosity, colour).as_bytes())
        }
    };
    // Errors of buffered output show at the flush: report them too.
    written.and_then(|_| out.flush())
}

pub fn human(r: &Report, verbosity: Verbosity, colour: bool) -> String {
    let mut out = String::new();
    for res in r.resources.iter().chain(&r.probes) {
        if verbosity == Verbosity::Quiet && matches!(res.status, Status::Ok | Status::Skipped) {
            continue;
        }
        let status = format!("{:<8}", res.status.as_str());
        let status = if colour {
            paint(res.status, &status)
        } else {
            status
        };
        let _ = writeln!(out, "{status} {:<15} {}", res.id, res.detail);
        if let Some(diff) = &res.diff {
            for line in diff.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let s = &r.summary;
    if verbosity != Verbosity::Quiet || s.failed + s.drift > 0 {
        let _ = writeln!(out, "{}", r.summary_line());
    }
    if let Some(c) = &r.consul_report {
        let _ = writeln!(out, "consul check nodeprep: {}", c.status);
    }
    out
}

fn paint(status: Status, text: &str) -> String {
    let code = match status {
        Status::Ok => "32",
        Status::Changed | Status::Drift => "33",
        Status::Failed => "31",
        Status::Skipped => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

const STATUSES: [Status; 5] = [
    Status::Ok,
    Status::Changed,
    Status::Drift,
    Status::Failed,
    Status::Skipped,
];

/// Prometheus text exposition format: one `nodeprep_status` series per
/// resource or probe and status (1 for the current one, 0 for the others, so
/// alerts can match on a status that is absent now), the run's summary,
/// duration and time.
pub fn prometheus(r: &Report) -> String {
    let mut out = String::new();
    out.push_str("# HELP nodeprep_status 1 if the resource or probe is in this status, else 0.\n");
    out.push_str("# TYPE nodeprep_status gauge\n");
    let series = |out: &mut String, kind: &str, res: &ResourceReport| {
        for status in STATUSES {
            let _ = writeln!(
                out,
                "nodeprep_status{{command=\"{}\",kind=\"{kind}\",id=\"{}\",status=\"{}\"}} {}",
                r.command,
                res.id,
                status.as_str(),
                u8::from(res.status == status)
            );
        }
    };
    for res in &r.resources {
        series(&mut out, "resource", res);
    }
    for res in &r.probes {
        series(&mut out, "probe", res);
    }
    out.push_str("# HELP nodeprep_summary Resources and probes in each status.\n");
    out.push_str("# TYPE nodeprep_summary gauge\n");
    let s = &r.summary;
    for (status, n) in [
        ("ok", s.ok),
        ("changed", s.changed),
        ("drift", s.drift),
        ("failed", s.failed),
        ("skipped", s.skipped),
    ] {
        let _ = writeln!(
            out,
            "nodeprep_summary{{command=\"{}\",status=\"{status}\"}} {n}",
            r.command
        );
    }
    out.push_str("# HELP nodeprep_run_duration_seconds How long the run took.\n");
    out.push_str("# TYPE nodeprep_run_duration_seconds gauge\n");
    let _ = writeln!(
        out,
        "nodeprep_run_duration_seconds{{command=\"{}\"}} {}",
        r.command, r.duration_seconds
    );
    out.push_str("# HELP nodeprep_run_timestamp_seconds When the run started (Unix time).\n");
    out.push_str("# TYPE nodeprep_run_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "nodeprep_run_timestamp_seconds{{command=\"{}\"}} {}",
        r.command, r.unix_time
    );
    out
}

/// The JSON document for a run that ended before any resource was looked at
/// (bad configuration, not root, lock held). A stdout that cannot take it
/// (a closed pipe, a full disk) is ignored: the exit code still tells.
pub fn fatal(command: &str, fatal: &Fatal) {
    let doc = serde_json::json!({
        "command": command,
        "version": env!("CARGO_PKG_VERSION"),
        "error": format!("{:#}", fatal.error),
        "exit_code": fatal.exit as u8,
    });
    let _ = writeln!(io::stdout().lock(), "{doc}").and_then(|_| io::stdout().flush());
}

/// A message for people on stderr (`nodeprep: ...`). Never fails and never
/// panics: a closed or full stderr must not turn a run's exit code into an
/// abort.
pub fn warn(msg: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "nodeprep: {msg}");
}

/// Text on stdout, with write errors returned (not a panic like `print!`).
pub fn text(s: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

pub fn facts(f: &Facts, format: Format) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json | Format::Prometheus => {
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
            out.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let r = |id, status, detail: &str| ResourceReport {
            id,
            status,
            detail: detail.into(),
            actions: Vec::new(),
            diff: None,
        };
        let mut rep = Report::new(
            "check",
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000),
            vec![
                r("link", Status::Ok, "dummy0 169.254.1.1/32 up"),
                r("dnsmasq", Status::Drift, "needs: write"),
            ],
            vec![r("consul-http", Status::Failed, "timeout")],
        );
        rep.duration_seconds = 0.012;
        rep
    }

    #[test]
    fn human_golden() {
        assert_eq!(
            human(&report(), Verbosity::Normal, false),
            "ok       link            dummy0 169.254.1.1/32 up\n\
             drift    dnsmasq         needs: write\n\
             failed   consul-http     timeout\n\
             check: 1 ok, 0 changed, 1 drift, 1 failed, 0 skipped\n"
        );
        assert!(human(&report(), Verbosity::Normal, true)
            .contains("\x1b[31mfailed  \x1b[0m consul-http"));
    }

    #[test]
    fn prometheus_golden_parts() {
        let text = prometheus(&report());
        assert!(text.starts_with("# HELP nodeprep_status"));
        assert!(text.contains(
            "nodeprep_status{command=\"check\",kind=\"resource\",id=\"link\",status=\"ok\"} 1\n"
        ));
        assert!(text.contains(
            "nodeprep_status{command=\"check\",kind=\"resource\",id=\"link\",status=\"drift\"} 0\n"
        ));
        assert!(text.contains("nodeprep_status{command=\"check\",kind=\"probe\",id=\"consul-http\",status=\"failed\"} 1\n"));
        assert!(text.contains("nodeprep_summary{command=\"check\",status=\"drift\"} 1\n"));
        assert!(text.contains("nodeprep_run_duration_seconds{command=\"check\"} 0.012\n"));
        assert!(text.ends_with("nodeprep_run_timestamp_seconds{command=\"check\"} 1764000000\n"));
    }
}
