//! The managed resources and their one table.
//!
//! The table's order is the converge order (the link exists before dnsmasq
//! and consul need its address; config files are in place before the
//! containers that read them are started); `remove` runs it backwards. The
//! ids the CLI accepts, in `--only`/`--skip` and in `--help`, come from here
//! too: adding a resource is one module and one line below.

use crate::engine::Entry;

pub mod consul_config;
pub mod containers;
pub mod dnsmasq;
pub mod docker_dns;
pub mod environment;
pub mod files;
pub mod link;
pub mod network;
pub mod podman_boot;
pub mod resolver;

pub static TABLE: [Entry; 10] = [
    Entry::of::<link::Link>(),
    Entry::of::<network::Network>(),
    Entry::of::<dnsmasq::Dnsmasq>(),
    Entry::of::<resolver::Resolver>(),
    Entry::of::<consul_config::ConsulConfig>(),
    Entry::of::<environment::Environment>(),
    // Before the containers: a dockerd restart it may need comes first.
    Entry::of::<docker_dns::DockerDns>(),
    Entry::of::<podman_boot::PodmanBoot>(),
    Entry::of::<containers::Consul>(),
    Entry::of::<containers::Registrator>(),
];

/// Former ids `--only` and `--skip` still accept, with the id they name now:
/// `networkd` became `network` when the resource learned NetworkManager.
pub static ALIASES: [(&str, &str); 1] = [("networkd", "network")];

/// The table's entry for `id`.
pub fn entry(id: &str) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_dependencies_come_first() {
        for (i, e) in TABLE.iter().enumerate() {
            assert!(
                TABLE[..i].iter().all(|o| o.id != e.id),
                "duplicate id {}",
                e.id
            );
            for dep in e.depends_on {
                let at = TABLE.iter().position(|o| o.id == *dep);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} depends on {dep}, which must come earlier in the table",
                    e.id
                );
            }
        }
    }
}
