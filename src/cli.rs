//! The command line. clap types stay here; `app` turns them into a run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probes::ProbeId;
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

    /// Do not run the live probes after converging
    #[arg(long)]
    pub no_probes: bool,

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

/// A resource or probe id, as `--only` and `--skip` take them. `registrator`
/// names both the container resource and its health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target(&'static str);

impl ValueEnum for Target {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [Target; 10] = [
            Target("link"),
            Target("networkd"),
            Target("dnsmasq"),
            Target("consul-config"),
            Target("environment"),
            Target("consul"),
            Target("registrator"),
            Target("consul-http"),
            Target("consul-dns"),
            Target("consul-exposure"),
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0))
    }
}

impl Selection {
    fn selected(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|t| t.0 == name))
            && !self.skip.iter().any(|t| t.0 == name)
    }

    /// The selected resources, always in converge order.
    pub fn resources(&self) -> Vec<ResourceId> {
        ResourceId::ALL
            .into_iter()
            .filter(|id| self.selected(id.as_str()))
            .collect()
    }

    pub fn probes(&self) -> Vec<ProbeId> {
        ProbeId::ALL
            .into_iter()
            .filter(|id| self.selected(id.as_str()))
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
        assert_eq!(a.selection.resources(), vec![ResourceId::Environment]);
        assert!(a.selection.probes().is_empty());
        let cli =
            Cli::try_parse_from(["nodeprep", "check", "--skip", "consul-dns,registrator"]).unwrap();
        let Command::Check(c) = cli.command else {
            panic!()
        };
        assert_eq!(
            c.selection.probes(),
            vec![ProbeId::ConsulHttp, ProbeId::ConsulExposure]
        );
        assert!(!c.selection.resources().contains(&ResourceId::Registrator));
    }
}
