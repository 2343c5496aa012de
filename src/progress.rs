//! Image pull progress on stderr (stdout carries the report): a bar on a
//! terminal, plain lines otherwise (cloud-init logs, CI).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sys::docker::PullEvent;

pub struct Pull {
    image: String,
    bar: Option<ProgressBar>,
    /// Last status seen per layer, so plain output prints changes only.
    layers: BTreeMap<String, String>,
}

impl Pull {
    pub fn new(image: &str) -> Pull {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "pull {prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_prefix(image.to_string());
            bar
        });
        if bar.is_none() {
            crate::output::warn(format_args!("pulling {image}"));
        }
        Pull {
            image: image.to_string(),
            bar,
            layers: BTreeMap::new(),
        }
    }

    pub fn event(&mut self, e: &PullEvent) {
        let Some(layer) = &e.layer else { return };
        let changed =
            self.layers.insert(layer.clone(), e.status.clone()).as_ref() != Some(&e.status);
        match &self.bar {
            Some(bar) => {
                // Overall bytes: the sum of each layer's latest total/current
                // would need per-layer state; downloads dominate, so track
                // the layer currently reporting.
                if let (Some(cur), Some(total)) = (e.current, e.total) {
                    bar.set_length(total.max(0) as u64);
                    bar.set_position(cur.max(0) as u64);
                }
                // A layer is done at "Pull complete" (Docker; "Already
                // exists" when it was there) or, from Podman, which sends
                // no "Pull complete", at "Download complete" (on Docker a
                // layer's latest status is "Extracting" after that).
                let done = self
                    .layers
                    .values()
                    .filter(|s| {
                        ["Pull complete", "Already exists", "Download complete"]
                            .iter()
                            .any(|d| s.starts_with(d))
                    })
                    .count();
                bar.set_message(format!("{done}/{} layers", self.layers.len()));
            }
            None if changed
                && !e.status.starts_with("Downloading")
                && !e.status.starts_with("Extracting") =>
            {
                crate::output::warn(format_args!("pull {}: {layer}: {}", self.image, e.status));
            }
            None => {}
        }
    }

    pub fn finish(self, ok: bool) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        if ok {
            crate::output::warn(format_args!("pulled {}", self.image));
        }
    }
}
