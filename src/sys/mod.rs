//! Side effects, one small module per kind: files, netlink, systemd, the lock;
//! `command` runs the host's tools for systemd, resolved and nm.

pub mod command;
pub mod consul;
pub mod docker;
pub mod files;
pub mod lock;
pub mod netlink;
pub mod nm;
pub mod resolved;
pub mod rooted;
pub mod systemd;
