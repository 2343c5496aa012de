//! nodeprep: converge and audit a Docker host for Consul service discovery
//! using the dummy-interface layout.
//!
//! Flow: `cli` -> `app` (validate, lock) -> `engine` (plan every resource of
//! `resources` against the host's facts, then execute the plan through `sys`)
//! -> `report` -> `output`. ARCHITECTURE.md has the whole picture.

pub mod app;
pub mod cli;
pub mod config;
pub mod docs;
pub mod engine;
pub mod envfile;
pub mod exit;
pub mod facts;
pub mod interrupt;
pub mod output;
pub mod probes;
pub mod progress;
pub mod render;
pub mod report;
pub mod resolvconf;
pub mod resources;
pub mod state;
pub mod sys;
