//! One run of nodeprep: from parsed command line to exit code.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};

use crate::cli::{Cli, Command, ConfigCommand, Format, Selection};
use crate::config::{self, Config};
use crate::docs;
use crate::engine::{self, Ensure, Host, Mode, RunSpec};
use crate::exit::{Exit, Fatal, OrExit};
use crate::facts;
use crate::interrupt;
use crate::output::{self, Verbosity};
use crate::probes;
use crate::report::{ConsulReport, Report, Status};
use crate::state::Trust;
use crate::sys::{self, consul, lock};

/// Where live applies and removes serialize (a tmpfs: never in an image).
const LOCK_PATH: &str = "/run/nodeprep.lock";

pub fn run(cli: Cli) -> Result<Exit, Fatal> {
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let global = Global {
        config: cli.config,
        root: cli.root,
        format: cli.format,
        verbosity,
    };
    let present = |mode, with_diff| RunSpec {
        mode,
        ensure: Ensure::Present,
        with_diff,
        purge_data: false,
    };
    match cli.command {
        Command::Apply(a) => {
            let mode = if a.dry_run { Mode::DryRun } else { Mode::Apply };
            converge(
                &global,
                "apply",
                &a.selection,
                Run {
                    spec: present(mode, a.diff),
                    // Probes prove a converged chain; a dry run converged
                    // nothing.
                    probes: !a.no_probes && !a.dry_run,
                    report_consul: false,
                },
            )
        }
        Command::Check(c) => converge(
            &global,
            "check",
            &c.selection,
            Run {
                spec: present(Mode::Check, false),
                probes: !c.no_probes,
                report_consul: c.report_consul,
            },
        ),
        Command::Plan(sel) => converge(
            &global,
            "plan",
            &sel,
            Run {
                spec: present(Mode::DryRun, true),
                probes: false,
                report_consul: false,
            },
        ),
        Command::Remove(r) => converge(
            &global,
            "remove",
            &r.selection,
            Run {
                spec: RunSpec {
                    mode: if r.dry_run { Mode::DryRun } else { Mode::Apply },
                    ensure: Ensure::Absent,
                    with_diff: r.diff,
                    purge_data: r.purge_data,
                },
                probes: false,
                report_consul: false,
            },
        ),
        Command::Facts => {
            let (cfg, source) = Config::load(global.config.as_deref()).or_exit(Exit::Config)?;
            let host = Host::new(cfg, None, nix::unistd::geteuid().is_root(), Duration::ZERO);
            output::facts(&facts::gather(&host, &source), global.format).or_exit(Exit::Failed)?;
            Ok(Exit::Ok)
        }
        Command::Config(ConfigCommand::Default) => {
            output::text(config::DEFAULT_TOML).or_exit(Exit::Failed)?;
            Ok(Exit::Ok)
        }
        Command::Completions { shell } => {
            print_bytes(&docs::completions(shell)).or_exit(Exit::Failed)?;
            Ok(Exit::Ok)
        }
        Command::Man => {
            print_bytes(&docs::man().or_exit(Exit::Failed)?).or_exit(Exit::Failed)?;
            Ok(Exit::Ok)
        }
        Command::Config(ConfigCommand::Validate { path }) => {
            let path = path
                .or(global.config)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            Config::load(Some(&path)).or_exit(Exit::Config)?;
            if global.verbosity != Verbosity::Quiet {
                output::text(&format!("{}: valid\n", path.display())).or_exit(Exit::Failed)?;
            }
            Ok(Exit::Ok)
        }
    }
}

/// Generated text (a man page, a completion script) on stdout.
fn print_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

struct Global {
    config: Option<PathBuf>,
    root: Option<PathBuf>,
    format: Format,
    verbosity: Verbosity,
}

struct Run {
    spec: RunSpec,
    probes: bool,
    report_consul: bool,
}

fn converge(g: &Global, command: &'static str, sel: &Selection, run: Run) -> Result<Exit, Fatal> {
    let started = SystemTime::now();
    let mode = run.spec.mode;
    // Everything that can be refused is refused before the first change:
    // the configuration (78), the command line (64), privileges (77).
    let (cfg, source) = Config::load(g.config.as_deref()).or_exit(Exit::Config)?;
    // The root every managed path is resolved inside: `/` live, or the
    // offline tree (its canonical path, so that links to it name one place).
    let root = match &g.root {
        Some(root) => Some(
            std::fs::canonicalize(root)
                .ok()
                .filter(|r| r.is_dir())
                .ok_or_else(|| {
                    Fatal::new(
                        Exit::Usage,
                        anyhow!("--root {}: not a directory", root.display()),
                    )
                })?,
        ),
        None => None,
    };
    if root.is_some() && run.report_consul {
        return Err(Fatal::new(
            Exit::Usage,
            anyhow!("--report-consul reports a live host; it cannot be used with --root"),
        ));
    }
    let as_root = nix::unistd::geteuid().is_root();
    if mode == Mode::Apply && g.root.is_none() && !as_root {
        return Err(Fatal::new(
            Exit::NoPerm,
            anyhow!("{command} changes the live host and must run as root (or use --root DIR for an offline tree)"),
        ));
    }
    if g.verbosity == Verbosity::Verbose {
        output::warn(format_args!("configuration: {source}"));
    }
    // On a fresh host dockerd may still be starting; an audit never waits.
    let docker_wait = match mode {
        Mode::Apply => Duration::from_secs(cfg.docker.wait_secs.0),
        Mode::Check | Mode::DryRun => Duration::ZERO,
    };
    let _lock = match (mode, &root) {
        (Mode::Apply, None) => Some(lock::acquire(Path::new(LOCK_PATH)).or_exit(Exit::Failed)?),
        // An offline tree is locked as a whole (the directory itself), so
        // the lock leaves nothing behind in an image.
        (Mode::Apply, Some(root)) => Some(lock::acquire_dir(root).or_exit(Exit::Failed)?),
        (Mode::Check | Mode::DryRun, _) => None,
    };
    if mode == Mode::Apply {
        // From here on a SIGTERM or SIGINT finishes the current action,
        // starts no other and reports (see `interrupt`).
        interrupt::watch().or_exit(Exit::Failed)?;
    }
    sys::rooted::confine(root.as_deref().unwrap_or(Path::new("/"))).or_exit(Exit::Failed)?;
    // Each directory is resolved once while the run reads (the record, the
    // plan, the sweep); `engine::run` stops this before the first change.
    let _reuse = sys::rooted::reuse_dirs();
    let host = Host::new(cfg, root, as_root, docker_wait);
    if let Trust::Unusable(why) = &host.store.trust {
        return Err(Fatal::new(Exit::Failed, anyhow!("{why}")));
    }
    let outcome = engine::run(&host, &sel.resources(), run.spec);
    let interrupted = interrupt::requested();
    let probes = if run.probes && interrupted.is_none() {
        probes::run(&host, &sel.probes())
    } else {
        Vec::new()
    };
    let mut report = Report::new(command, started, outcome.resources, probes);
    report.notes = outcome.notes;
    let mut exit = exit_code(&report, mode);
    if let Some(sig) = interrupted {
        output::warn(format_args!(
            "interrupted by {sig}: the action under way was finished and nothing else was started; run `nodeprep {command}` again to finish"
        ));
        exit = Exit::Failed;
    }
    if run.report_consul {
        // A failure to report is its own error, never a silent skip; it is
        // part of the one report document, not a second one.
        let outcome = report_to_consul(&host, &report);
        if let Err(e) = &outcome {
            output::warn(format_args!("{e:#}"));
            exit = Exit::Failed;
        }
        report.consul_report = Some(ConsulReport::from(outcome));
    }
    // The changes are in the state record already; a stdout that fails
    // (a closed pipe, a full disk) only loses the report: exit 1.
    output::report(&report, g.format, g.verbosity)
        .map_err(|e| anyhow!("cannot write the report to stdout: {e}"))
        .or_exit(Exit::Failed)?;
    Ok(exit)
}

/// `apply`'s exit code says whether it converged: 0 even when a probe found
/// the chain not answering yet (a just-started agent, a client whose servers
/// are not up), which the report shows as drift; 2 stays "changes pending"
/// for dry runs and "drift" for `check`.
fn exit_code(report: &Report, mode: Mode) -> Exit {
    let s = &report.summary;
    if s.failed > 0 {
        Exit::Failed
    } else if mode != Mode::Apply && s.drift > 0 {
        Exit::Drift
    } else {
        Exit::Ok
    }
}

fn report_to_consul(host: &Host, report: &Report) -> anyhow::Result<&'static str> {
    let base = probes::agent_url(&host.cfg, "");
    let agent = consul::Agent::new(
        base.clone(),
        Duration::from_millis(host.cfg.probes.timeout_ms),
    );
    let s = &report.summary;
    let status = if s.failed > 0 {
        consul::CheckStatus::Critical
    } else if s.drift > 0 {
        consul::CheckStatus::Warning
    } else {
        consul::CheckStatus::Passing
    };
    let mut output = report.summary_line();
    for r in report.resources.iter().chain(&report.probes) {
        if matches!(r.status, Status::Drift | Status::Failed) {
            output.push_str(&format!("\n{} {}: {}", r.status.as_str(), r.id, r.detail));
        }
    }
    let ctx_msg = || format!("cannot report to the Consul agent at {base}");
    agent
        .ensure_check(host.cfg.report.ttl_secs)
        .with_context(ctx_msg)?;
    agent.update(status, &output).with_context(ctx_msg)?;
    Ok(status.as_str())
}
