//! The command line. clap types stay here; `app` turns them into a run.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::Entry;
use crate::probes::{self, Probe};
use crate::resources;

#[derive(Debug, Parser)]
#[command(
    name = "nodeprep",
    version,
    about = "Converge and audit a Docker host for Consul service discovery (dummy0 link-local layout)",
    help_expected = true,
    disable_help_subcommand = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    /// Configuration file [default: /etc/nodeprep/nodeprep.toml; embedded defaults if it is missing]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Offline mode: take every managed file under DIR and skip the live link and services
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print only resources that are not ok, and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print notes and where the configuration came from
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    /// Prometheus text exposition, for node_exporter's textfile collector
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the host
    Apply(ApplyArgs),
    /// Read-only audit: exit 0 when compliant, 2 on drift
    Check(CheckArgs),
    /// Show what apply would change, with diffs (apply --dry-run --diff)
    Plan(Selection),
    /// Undo what apply set up, in reverse order, touching only what nodeprep manages
    Remove(RemoveArgs),
    /// Print what nodeprep detects about this host
    Facts,
    /// Print the commented default configuration, or validate a file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script on stdout
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the manual page nodeprep(8), in roff, on stdout
    Man,
}

/// The shells `nodeprep completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Apply(_) => "apply",
            Command::Check(_) => "check",
            Command::Plan(_) => "plan",
            Command::Remove(_) => "remove",
            Command::Facts => "facts",
            Command::Config(_) => "config",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Change nothing; report what would change (exit 2 if anything would)
    #[arg(long)]
    pub dry_run: bool,

    /// Print unified diffs of file changes
    #[arg(long)]
    pub diff: bool,

    /// Do not run the live probes after converging
    #[arg(long)]
    pub no_probes: bool,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Change nothing; report what would be removed (exit 2 if anything would)
    #[arg(long)]
    pub dry_run: bool,

    /// Print unified diffs of file changes
    #[arg(long)]
    pub diff: bool,

    /// Also delete the Consul agent's data dir (kept by default)
    #[arg(long)]
    pub purge_data: bool,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Audit the configuration only, without the live probes
    #[arg(long)]
    pub no_probes: bool,

    /// Keep a TTL check named "nodeprep" on the local Consul agent updated
    /// with the result (passing, warning on drift, critical on failure)
    #[arg(long)]
    pub report_consul: bool,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Only these resources and probes (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ID,..")]
    pub only: Vec<Target>,

    /// All resources and probes except these (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ID,..")]
    pub skip: Vec<Target>,
}

/// A resource or probe id, as `--only` and `--skip` take them, from the
/// resource and probe tables. `registrator` names both the container
/// resource and its health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target(&'static str);

/// Every id, resources first, each once.
static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    let mut ids: Vec<&'static str> = resources::TABLE.iter().map(|e| e.id).collect();
    for p in &probes::TABLE {
        if !ids.contains(&p.id) {
            ids.push(p.id);
        }
    }
    ids.into_iter().map(Target).collect()
});

impl ValueEnum for Target {
    fn value_variants<'a>() -> &'a [Self] {
        TARGETS.as_slice()
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let value = resources::ALIASES
            .iter()
            .filter(|(_, id)| *id == self.0)
            .fold(
                clap::builder::PossibleValue::new(self.0),
                |v, (alias, _)| v.alias(*alias),
            );
        Some(value)
    }
}

impl Selection {
    fn selected(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|t| t.0 == name))
            && !self.skip.iter().any(|t| t.0 == name)
    }

    /// The selected resources, always in table (converge) order.
    pub fn resources(&self) -> Vec<&'static Entry> {
        resources::TABLE
            .iter()
            .filter(|e| self.selected(e.id))
            .collect()
    }

    pub fn probes(&self) -> Vec<&'static Probe> {
        probes::TABLE
            .iter()
            .filter(|p| self.selected(p.id))
            .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the commented default configuration
    Default,
    /// Validate a configuration file (default: the --config path or /etc/nodeprep/nodeprep.toml)
    Validate {
        /// The file to validate
        path: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn selection_keeps_converge_order() {
        let cli = Cli::try_parse_from([
            "nodeprep",
            "apply",
            "--only",
            "environment,link",
            "--skip",
            "link",
        ])
        .unwrap();
        let Command::Apply(a) = cli.command else {
            panic!()
        };
        let ids = |s: &Selection| s.resources().iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&a.selection), ["environment"]);
        assert!(a.selection.probes().is_empty());
        let cli =
            Cli::try_parse_from(["nodeprep", "check", "--skip", "consul-dns,registrator"]).unwrap();
        let Command::Check(c) = cli.command else {
            panic!()
        };
        let probes: Vec<&str> = c.selection.probes().iter().map(|p| p.id).collect();
        assert_eq!(
            probes,
            ["consul-http", "host-dns", "upstream-dns", "consul-exposure"]
        );
        assert!(!ids(&c.selection).contains(&"registrator"));
    }

    #[test]
    fn former_ids_still_select_their_resource() {
        let cli = Cli::try_parse_from(["nodeprep", "check", "--only", "networkd"]).unwrap();
        let Command::Check(c) = cli.command else {
            panic!()
        };
        let ids: Vec<&str> = c.selection.resources().iter().map(|e| e.id).collect();
        assert_eq!(ids, ["network"]);
    }

    #[test]
    fn every_table_id_is_accepted_and_listed_in_help() {
        let help = Cli::command()
            .find_subcommand_mut("apply")
            .unwrap()
            .render_long_help()
            .to_string();
        let ids = resources::TABLE
            .iter()
            .map(|e| e.id)
            .chain(probes::TABLE.iter().map(|p| p.id));
        for id in ids {
            for cmd in ["apply", "check", "plan", "remove"] {
                Cli::try_parse_from(["nodeprep", cmd, "--only", id])
                    .unwrap_or_else(|e| panic!("{cmd} --only {id}: {e}"));
            }
            assert!(
                help.contains(id),
                "{id} missing from `apply --help`:\n{help}"
            );
        }
    }
}
