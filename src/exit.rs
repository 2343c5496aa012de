//! Exit codes: the contract scripts and cloud-init rely on.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Converged, or compliant.
    Ok = 0,
    /// A step failed at runtime.
    Failed = 1,
    /// `check` found drift, or `apply --dry-run` has changes pending.
    Drift = 2,
    /// Bad command line (EX_USAGE).
    Usage = 64,
    /// Not permitted: live changes need root (EX_NOPERM).
    NoPerm = 77,
    /// Invalid configuration (EX_CONFIG).
    Config = 78,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// An error that ends the run before or instead of a report, with the exit
/// code it maps to. Runtime failures of single resources are not `Fatal`:
/// they are reported per resource and the run goes on.
#[derive(Debug)]
pub struct Fatal {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Fatal {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Fatal {
        Fatal {
            exit,
            error: error.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

/// Attaches an exit code to any error: `result.or_exit(Exit::Config)?`.
pub trait OrExit<T> {
    fn or_exit(self, exit: Exit) -> Result<T, Fatal>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, exit: Exit) -> Result<T, Fatal> {
        self.map_err(|e| Fatal::new(exit, e))
    }
}
