//! nodeprep: converge and audit a Docker host for Consul service discovery
//! using the dummy-interface layout.
//!
//! Flow: `cli` -> `app` (validate, lock) -> `engine` (per resource: observe and
//! diff in `resources`, execute through `sys`) -> `report` -> `output`.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod envfile;
pub mod exit;
pub mod facts;
pub mod output;
pub mod plan;
pub mod probes;
pub mod progress;
pub mod render;
pub mod report;
pub mod resources;
pub mod sys;
