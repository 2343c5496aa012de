//! One run of nodeprep: from parsed command line to exit code.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::cli::{Cli, Command, ConfigCommand, Format, Selection};
use crate::config::{self, Config};
use crate::engine::{self, Mode};
use crate::exit::{Exit, Fatal, OrExit};
use crate::facts;
use crate::output::{self, Verbosity};
use crate::report::Report;
use crate::resources::Ctx;
use crate::sys::lock;

/// Where live applies serialize; re-based under `--root` like managed files.
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
    match cli.command {
        Command::Apply(a) => {
            let mode = if a.dry_run { Mode::DryRun } else { Mode::Apply };
            converge(&global, "apply", &a.selection, mode, a.diff)
        }
        Command::Check(sel) => converge(&global, "check", &sel, Mode::Check, false),
        Command::Plan(sel) => converge(&global, "plan", &sel, Mode::DryRun, true),
        Command::Facts => {
            let (cfg, source) = Config::load(global.config.as_deref()).or_exit(Exit::Config)?;
            let ctx = Ctx::new(cfg, None, nix::unistd::geteuid().is_root());
            output::facts(&facts::gather(&ctx, &source), global.format).or_exit(Exit::Failed)?;
            Ok(Exit::Ok)
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_TOML);
            Ok(Exit::Ok)
        }
        Command::Config(ConfigCommand::Validate { path }) => {
            let path = path
                .or(global.config)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            Config::load(Some(&path)).or_exit(Exit::Config)?;
            if global.verbosity != Verbosity::Quiet {
                println!("{}: valid", path.display());
            }
            Ok(Exit::Ok)
        }
    }
}

struct Global {
    config: Option<PathBuf>,
    root: Option<PathBuf>,
    format: Format,
    verbosity: Verbosity,
}

fn converge(
    g: &Global,
    command: &'static str,
    sel: &Selection,
    mode: Mode,
    with_diff: bool,
) -> Result<Exit, Fatal> {
    // Everything that can be refused is refused before the first change:
    // the configuration (78), the command line (64), privileges (77).
    let (cfg, source) = Config::load(g.config.as_deref()).or_exit(Exit::Config)?;
    if let Some(root) = &g.root {
        if !root.is_dir() {
            return Err(Fatal::new(
                Exit::Usage,
                anyhow!("--root {}: not a directory", root.display()),
            ));
        }
    }
    let as_root = nix::unistd::geteuid().is_root();
    if mode == Mode::Apply && g.root.is_none() && !as_root {
        return Err(Fatal::new(
            Exit::NoPerm,
            anyhow!("apply changes the live host and must run as root (or use --root DIR for an offline tree)"),
        ));
    }
    if g.verbosity == Verbosity::Verbose {
        eprintln!("nodeprep: configuration: {source}");
    }
    let mut ctx = Ctx::new(cfg, g.root.clone(), as_root);
    if mode == Mode::Apply {
        // On a fresh host dockerd may still be starting; an audit never waits.
        ctx.docker_wait = std::time::Duration::from_secs(ctx.cfg.docker.wait_secs.0);
    }
    let _lock = match mode {
        Mode::Apply => {
            Some(lock::acquire(&ctx.host_path(Path::new(LOCK_PATH))).or_exit(Exit::Failed)?)
        }
        Mode::Check | Mode::DryRun => None,
    };
    let report = Report::new(command, engine::run(&ctx, &sel.resolve(), mode, with_diff));
    output::report(&report, g.format, g.verbosity).or_exit(Exit::Failed)?;
    Ok(if report.summary.failed > 0 {
        Exit::Failed
    } else if report.summary.drift > 0 {
        Exit::Drift
    } else {
        Exit::Ok
    })
}
