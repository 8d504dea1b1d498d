//! Build progress: indicatif spinners on a terminal, plain lines in CI, or nothing.

use super::args::ProgressMode;
use crate::exec::Observer;
use crate::layer::LayerDigests;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

pub enum Progress {
    Quiet,
    Plain,
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        match mode {
            ProgressMode::Quiet => Progress::Quiet,
            ProgressMode::Plain => Progress::Plain,
            ProgressMode::Auto
                if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() =>
            {
                Progress::Bars {
                    multi: MultiProgress::new(),
                    bars: Mutex::new(HashMap::new()),
                }
            }
            ProgressMode::Auto => Progress::Plain,
        }
    }

    /// A line of its own (e.g. what was written where).
    pub fn note(&self, line: &str) {
        Observer::note(self, line)
    }
}

impl Observer for Progress {
    fn note(&self, line: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Plain => eprintln!("{line}"),
            Progress::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
        }
    }

    fn step_started(&self, name: &str) {
        match self {
            Progress::Plain => eprintln!("layer {name}: writing"),
            Progress::Bars { multi, bars } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
                bar.set_message(format!("layer {name}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.lock()
                    .expect("progress lock")
                    .insert(name.to_string(), bar);
            }
            Progress::Quiet => {}
        }
    }

    fn step_rebuilt(&self, name: &str, reason: &str) {
        let line = format!("layer {name}: not cached: {reason}");
        match self {
            Progress::Plain => eprintln!("{line}"),
            Progress::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Progress::Quiet => {}
        }
    }

    fn step_output(&self, name: &str, chunk: &[u8]) {
        let text = String::from_utf8_lossy(chunk);
        match self {
            Progress::Plain => {
                let mut err = std::io::stderr().lock();
                for line in text.lines() {
                    let _ = writeln!(err, "{name}: {line}");
                }
            }
            Progress::Bars { bars, .. } => {
                if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                    if let Some(bar) = bars.lock().expect("progress lock").get(name) {
                        bar.set_message(format!("{name}: {}", last.trim_end()));
                    }
                }
            }
            Progress::Quiet => {}
        }
    }

    fn step_finished(&self, name: &str, layer: &LayerDigests, cached: bool) {
        let how = if cached { "cached" } else { "done" };
        let line = format!(
            "layer {name}: {how} {} ({} bytes)",
            short(&layer.digest),
            layer.size
        );
        match self {
            Progress::Plain => eprintln!("{line}"),
            Progress::Bars { multi, bars } => {
                if let Some(bar) = bars.lock().expect("progress lock").remove(name) {
                    bar.finish_and_clear();
                }
                let _ = multi.println(line);
            }
            Progress::Quiet => {}
        }
    }
}

fn short(d: &crate::digest::Digest) -> String {
    d.hex()[..12].to_string()
}
