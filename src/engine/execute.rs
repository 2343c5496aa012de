//! The one executor: carries out a planned action through the side-effect
//! modules (`sys::files`, `sys::systemd`, `sys::netlink`, `sys::docker`),
//! and keeps nodeprep's record up to date, each change recorded before it
//! is made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::action::{
    Action, ContainerOp, FileOp, HostPath, Keep, LinkOp, NmOp, ResolverOp, UnitOp,
};
use super::host::Host;
use super::Forget;
use crate::progress;
use crate::state::{self, FileEntry, Original, Store};
use crate::sys::files;
use crate::sys::netlink::Created;
use crate::sys::{nm, resolved};

/// Carries out one action. Returns a remark for the report when the host
/// got there by itself (the kernel created the link first, say).
pub fn action(host: &Host, store: &mut Store, action: &Action) -> Result<Option<String>> {
    match action {
        Action::File(op) => file(host, store, op).map(|()| None),
        Action::Unit(op) => unit(host, store, op).map(|()| None),
        Action::Link(op) => link(host, store, op),
        Action::Container(op) => container(host, op).map(|()| None),
        Action::Resolver(op) => resolver(op).map(|()| None),
        Action::Nm(op) => network_manager(op).map(|()| None),
    }
}

fn network_manager(op: &NmOp) -> Result<()> {
    match op {
        NmOp::Load { path, uuid } | NmOp::Unload { path, uuid } => nm::load(&path.real, uuid),
        NmOp::Up { uuid, .. } => nm::up(uuid),
        NmOp::Down { uuid, .. } => nm::down(uuid),
        NmOp::ReloadConf => nm::reload_conf(),
    }
}

fn save(host: &Host, store: &mut Store) -> Result<()> {
    state_dir(host, store)?;
    files::write_atomic(
        &store.record_path(),
        &store.serialized(),
        0o644,
        host.root_owner(),
    )
    .context("cannot update nodeprep's state record")
}

/// Creates the state directory (0755, recorded) when it is missing.
fn state_dir(host: &Host, store: &mut Store) -> Result<()> {
    if !files::is_dir(&store.dir) {
        let created = files::missing_dirs(&store.dir);
        for dir in &created {
            store.record.dirs.insert(host_path_of(host, dir));
        }
        files::create_dirs(&created, 0o755, host.root_owner())?;
    }
    Ok(())
}

/// Removes the temporary files a killed run left beside the managed files
/// this run looked at, beside the files of the record, and anywhere in the
/// state directory. Runs under the lock, before the first change; returns
/// remarks for the report.
///
/// Every apply and remove sweeps, not only one after a run known to be
/// interrupted: temporary files may come from a run that left no trace of
/// itself (an older nodeprep, a record lost with the state directory), and
/// a converged run pays one getdents64 per directory it has open already
/// (directories are reused while the run plans, see `rooted::reuse_dirs`).
pub fn sweep(host: &Host, store: &Store) -> Vec<String> {
    let mut dirs: BTreeSet<PathBuf> = host.dirs_seen().into_iter().collect();
    for path in store.record.files.keys() {
        if let Some(dir) = host.path(path).real.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    let mut swept: BTreeMap<PathBuf, Result<Vec<PathBuf>>> = BTreeMap::new();
    // The state directory's tree (originals/, edited/), at most 4096
    // directories of it.
    let mut tree = vec![store.dir.clone()];
    while let Some(dir) = tree.pop() {
        if swept.contains_key(&dir) || swept.len() >= 4096 {
            continue;
        }
        let found = files::sweep_temp(&dir, true).map(|s| {
            tree.extend(s.subdirs);
            s.removed
        });
        swept.insert(dir, found);
    }
    for dir in dirs {
        if let std::collections::btree_map::Entry::Vacant(slot) = swept.entry(dir) {
            let found = files::sweep_temp(slot.key(), false).map(|s| s.removed);
            slot.insert(found);
        }
    }
    let mut notes = Vec::new();
    for found in swept.into_values() {
        match found {
            Ok(removed) => notes.extend(removed.iter().map(|p| {
                format!(
                    "removed {}, a temporary file an interrupted run left behind",
                    host_path_of(host, p).display()
                )
            })),
            Err(e) => notes.push(format!("cannot clean temporary files: {e:#}")),
        }
    }
    notes
}

/// The host path of a path this run reaches (the inverse of `Host::path`).
fn host_path_of(host: &Host, real: &Path) -> PathBuf {
    match &host.root {
        Some(root) => Path::new("/").join(real.strip_prefix(root).unwrap_or(real)),
        None => real.to_path_buf(),
    }
}

/// Copies a file's current content into the state directory before it is
/// replaced or removed: as the original (`remove` puts it back), or as the
/// last edit someone else made.
fn keep(
    host: &Host,
    store: &mut Store,
    path: &HostPath,
    keep: Keep,
    old: Option<&super::Current>,
) -> Result<()> {
    let Some(old) = old else { return Ok(()) };
    let target = match keep {
        Keep::Nothing => return Ok(()),
        Keep::Original => store.original_path(&path.host),
        Keep::Edited => store.edited_path(&path.host),
    };
    // Kept copies may hold secrets (an agent.json with a gossip key):
    // readable by root only; the recorded mode is what `remove` restores.
    // The state directory itself is an ordinary 0755 directory.
    state_dir(host, store)?;
    let dir = target.parent().expect("kept copies live in a directory");
    let created = files::missing_dirs(dir);
    files::create_dirs(&created, 0o700, host.root_owner())?;
    files::write_atomic(&target, &old.content, 0o600, host.root_owner())
        .with_context(|| format!("cannot keep the current {path} in {}", target.display()))?;
    if keep == Keep::Original {
        store.record.files.insert(
            path.host.clone(),
            FileEntry {
                original: Original::Kept {
                    mode: old.mode,
                    uid: old.uid,
                    gid: old.gid,
                },
                written: String::new(),
            },
        );
    }
    Ok(())
}

fn file(host: &Host, store: &mut Store, op: &FileOp) -> Result<()> {
    match op {
        FileOp::Write {
            path,
            content,
            mode,
            owner,
            old,
            keep: k,
            ..
        } => {
            keep(host, store, path, *k, old.as_ref())?;
            let dir = path
                .real
                .parent()
                .with_context(|| format!("{path} has no parent directory"))?;
            let created = files::missing_dirs(dir);
            for d in &created {
                store.record.dirs.insert(host_path_of(host, d));
            }
            let entry = store
                .record
                .files
                .entry(path.host.clone())
                .or_insert(FileEntry {
                    original: Original::Absent,
                    written: String::new(),
                });
            entry.written = state::digest(content);
            save(host, store)?;
            files::create_dirs(&created, 0o755, host.root_owner())?;
            files::write_atomic(&path.real, content, *mode, *owner)
        }
        FileOp::Chmod { path, mode, .. } => files::set_mode(&path.real, *mode),
        FileOp::Remove {
            path, old, keep: k, ..
        } => {
            keep(host, store, path, *k, Some(old))?;
            files::remove_file(&path.real)?;
            store.record.files.remove(&path.host);
            save(host, store)
        }
        FileOp::Restore {
            path,
            original,
            how,
            old,
            keep: k,
            ..
        } => {
            keep(host, store, path, *k, old.as_ref())?;
            let Original::Kept { mode, uid, gid } = *how else {
                bail!("{path}: there is no original to restore");
            };
            let owner = host.as_root.then_some((uid, gid));
            files::write_atomic(&path.real, original, mode, owner)?;
            store.record.files.remove(&path.host);
            save(host, store)?;
            // The kept copy has served its purpose.
            files::remove_file(&store.original_path(&path.host))
        }
        FileOp::Dir {
            path, mode, owner, ..
        } => {
            let created = files::missing_dirs(&path.real);
            if !created.is_empty() {
                for d in &created {
                    store.record.dirs.insert(host_path_of(host, d));
                }
                save(host, store)?;
            }
            files::ensure_dir(&path.real, *mode, *owner)
        }
        FileOp::Rmdir { path } => {
            files::remove_dir(&path.real)?;
            store.record.dirs.remove(&path.host);
            save(host, store)
        }
        FileOp::Purge { path } => files::remove_tree(&path.real),
    }
}

fn unit(host: &Host, store: &mut Store, op: &UnitOp) -> Result<()> {
    let systemd = host
        .facts
        .systemd
        .ok_or_else(|| anyhow!("cannot {op}: systemd is not running on this host"))?;
    match op {
        UnitOp::Enable(unit) => {
            store.record.enabled_units.insert(unit.to_string());
            save(host, store)?;
            systemd.enable(unit)
        }
        UnitOp::KeepDisabled(unit) => systemd.disable(unit),
        UnitOp::Disable(unit) => {
            systemd.disable(unit)?;
            store.record.enabled_units.remove(*unit);
            save(host, store)
        }
        UnitOp::Start(unit) => {
            store.record.started_units.insert(unit.to_string());
            save(host, store)?;
            systemd.start(unit)
        }
        UnitOp::Stop(unit) => {
            systemd.stop(unit)?;
            store.record.started_units.remove(*unit);
            save(host, store)
        }
        UnitOp::Restart(unit) => systemd.restart(unit),
        UnitOp::ReloadNetworkd => systemd.reload_networkd(),
        UnitOp::TryRestart(unit) => systemd.try_restart(unit),
    }
}

fn link(host: &Host, store: &mut Store, op: &LinkOp) -> Result<Option<String>> {
    let nl = host.facts.netlink()?;
    let index = |name: &str| -> Result<u32> {
        match nl.link(name)? {
            Some(l) => Ok(l.index),
            None => bail!("link {name} disappeared while nodeprep was configuring it"),
        }
    };
    // Undoing: a link another service took away meanwhile (NetworkManager
    // deletes a dummy link it created when its profile goes) is already
    // where `remove` wants it.
    if let LinkOp::DelAddress { name, .. } | LinkOp::Delete { name } = op {
        if nl.link(name)?.is_none() {
            if matches!(op, LinkOp::Delete { .. }) {
                store.record.links.remove(name);
                save(host, store)?;
            }
            return Ok(Some(format!("{name} was already gone")));
        }
    }
    match op {
        LinkOp::CreateDummy { name } => {
            store.record.links.insert(name.clone());
            save(host, store)?;
            let created = nl.create_dummy(name).inspect_err(|_| {
                // Not created after all: the record must not claim it.
                store.record.links.remove(name);
                let _ = save(host, store);
            })?;
            match created {
                Created::New => Ok(None),
                Created::AlreadyExisted => {
                    // The dummy module (or networkd) created it between our
                    // read and our create: not nodeprep's link after all.
                    // Verify its kind before anything else touches it.
                    store.record.links.remove(name);
                    save(host, store)?;
                    match nl.link(name)? {
                        Some(l) if l.kind.as_deref() == Some("dummy") => Ok(Some(format!(
                            "{name} appeared meanwhile (EEXIST); verified it is a dummy link"
                        ))),
                        Some(l) => bail!(
                            "link {name} appeared meanwhile and is a {}, not dummy: nodeprep never deletes a link it did not create",
                            l.kind.as_deref().unwrap_or("link without a kind")
                        ),
                        None => bail!("link {name}: the kernel reported EEXIST but no such link can be read"),
                    }
                }
            }
        }
        LinkOp::AddAddress { name, net } => nl.add_address(name, index(name)?, *net).map(|()| None),
        LinkOp::DelAddress { name, net } => nl.del_address(name, index(name)?, *net).map(|()| None),
        LinkOp::SetUp { name } => nl.set_up(name, index(name)?).map(|()| None),
        LinkOp::Delete { name } => {
            nl.delete(name, index(name)?)?;
            store.record.links.remove(name);
            save(host, store)?;
            Ok(None)
        }
    }
}

fn container(host: &Host, op: &ContainerOp) -> Result<()> {
    if let ContainerOp::RestartEngine { unit } = op {
        let systemd = host
            .facts
            .systemd
            .ok_or_else(|| anyhow!("cannot {op}: systemd is not running on this host"))?;
        systemd.restart(unit)?;
        // The containers that were running come back by their restart
        // policy; later resources talk to the engine again.
        let wait = std::time::Duration::from_secs(host.cfg.docker.wait_secs.0.max(30));
        return host.facts.docker()?.wait_ready(wait);
    }
    let docker = host.facts.docker()?;
    match op {
        ContainerOp::Pull { image } => {
            let mut display = progress::Pull::new(image);
            let result = docker.pull(image, &mut |event| display.event(&event));
            display.finish(result.is_ok());
            result
        }
        ContainerOp::Create { name, spec } => docker.create(name, spec),
        ContainerOp::Start { name } => docker.start(name),
        ContainerOp::Restart { name, .. } => docker.restart(name),
        ContainerOp::Remove { name, .. } => docker.remove(name),
        ContainerOp::RestartEngine { .. } => unreachable!("handled above"),
    }
}

fn resolver(op: &ResolverOp) -> Result<()> {
    match op {
        ResolverOp::SetServers { link, servers } => resolved::set_servers(link, servers),
        ResolverOp::SetDomains { link, domains } => resolved::set_domains(link, domains),
        ResolverOp::SetDefaultRoute { link, on } => resolved::set_default_route(link, *on),
        ResolverOp::Revert { link } => resolved::revert(link),
    }
}

/// Lets go of record entries a successful remove made meaningless. Best
/// effort: the record only makes a later remove more precise.
pub fn forget(host: &Host, store: &mut Store, entries: &[Forget]) {
    if entries.is_empty() {
        return;
    }
    let before = store.record.clone();
    for e in entries {
        match e {
            Forget::File(p) => {
                store.record.files.remove(p);
            }
            Forget::Link(l) => {
                store.record.links.remove(l);
            }
            Forget::Unit(u) => {
                store.record.enabled_units.remove(u);
                store.record.started_units.remove(u);
            }
        }
    }
    if store.record != before && files::is_dir(&store.dir) {
        let _ = save(host, store);
    }
}

/// After a remove: once nothing is left to undo, the record goes, and with
/// it the directories nodeprep created that are now empty (its own state
/// directory included). Copies of files others edited are never deleted:
/// then the state directory stays. Returns remarks for the report.
pub fn tidy_state(host: &Host, store: &mut Store) -> Vec<String> {
    let mut notes = Vec::new();
    if !store.record.is_empty() || !files::exists(&store.dir) {
        return notes;
    }
    if let Err(e) = files::remove_file(&store.record_path()) {
        notes.push(format!("{e:#}"));
        return notes;
    }
    let mut dirs: Vec<PathBuf> = store.record.dirs.iter().cloned().collect();
    // With nothing left to undo, kept originals serve nothing (one can be
    // left when a run was killed between putting it back and recording
    // that); only a record that was read and is now empty says so.
    if store.trust == crate::state::Trust::Loaded {
        if let Err(e) = files::remove_tree(&store.original_path(Path::new("/"))) {
            notes.push(format!("{e:#}"));
        }
    }
    for sub in [
        store.original_path(Path::new("/")),
        store.edited_path(Path::new("/")),
    ] {
        files::remove_empty_tree(&sub);
    }
    // The state directory itself goes once empty, recorded or not (a run
    // killed between creating it and writing the first record).
    let _ = files::remove_dir(&store.dir);
    // Deepest first, so a parent is looked at after its children.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let real = host.path(&dir).real;
        match files::remove_dir(&real) {
            Ok(()) => {}
            Err(_) if files::exists(&real) => {
                if real == store.dir {
                    notes.push(format!(
                        "kept {}: it holds copies of files others had edited",
                        dir.display()
                    ));
                }
            }
            Err(_) => {}
        }
    }
    notes
}
