//! `environment`: the managed variables in /etc/environment, merged into the
//! operator's file (see `envfile`).

use anyhow::Result;

use crate::plan::{diff_file, Plan};
use crate::render;
use crate::resources::Ctx;
use crate::sys::files;

pub fn plan(ctx: &Ctx) -> Result<Plan> {
    let path = ctx.host_path(ctx.cfg.environment.file.as_path());
    let observed = files::observe(&path)?;
    let existing = observed
        .as_ref()
        .map(|o| o.content.as_slice())
        .unwrap_or_default();
    let content = render::environment(&ctx.cfg, existing);
    let names: Vec<&str> = ctx
        .cfg
        .environment
        .vars
        .keys()
        .map(|k| k.0.as_str())
        .collect();
    Ok(Plan {
        actions: diff_file(path, content, ctx.file_spec(), observed.as_ref())
            .into_iter()
            .collect(),
        state: format!(
            "{} sets {}",
            ctx.cfg.environment.file.as_path().display(),
            names.join(", ")
        ),
        ..Plan::default()
    })
}
