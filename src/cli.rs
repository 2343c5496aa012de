//! The command line. clap types stay here; `app` turns them into a run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::resources::ResourceId;

#[derive(Debug, Parser)]
#[command(
    name = "nodeprep",
    version,
    about = "Converge and audit a Docker host for Consul service discovery (dummy0 link-local layout)",
    help_expected = true,
    disable_help_subcommand = true
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the host
    Apply(ApplyArgs),
    /// Read-only audit: exit 0 when compliant, 2 on drift
    Check(Selection),
    /// Show what apply would change, with diffs (apply --dry-run --diff)
    Plan(Selection),
    /// Print what nodeprep detects about this host
    Facts,
    /// Print the commented default configuration, or validate a file
    #[command(subcommand)]
    Config(ConfigCommand),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Apply(_) => "apply",
            Command::Check(_) => "check",
            Command::Plan(_) => "plan",
            Command::Facts => "facts",
            Command::Config(_) => "config",
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

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Only these resources (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ID,..")]
    pub only: Vec<ResourceId>,

    /// All resources except these (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ID,..")]
    pub skip: Vec<ResourceId>,
}

impl Selection {
    /// The selected resources, always in converge order.
    pub fn resolve(&self) -> Vec<ResourceId> {
        ResourceId::ALL
            .into_iter()
            .filter(|id| self.only.is_empty() || self.only.contains(id))
            .filter(|id| !self.skip.contains(id))
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
        assert_eq!(a.selection.resolve(), vec![ResourceId::Environment]);
    }
}
