//! Progress bars on stderr for the CLI's long steps (pull, catalog ingest, the benches, doctor):
//! drawn only when stderr is a terminal, so stdout, pipes and logs stay machine-readable.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a drawn bar redraws on its own.
const TICK: Duration = Duration::from_millis(200);

/// A bar, plus whether its notes should still reach stderr as plain lines when the bar is not
/// drawn (stderr is not a terminal, but the caller asked for progress output).
pub struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    /// A bar counting bytes up to `total_bytes`; `visible` false hides it and its notes.
    pub fn bytes(total_bytes: u64, visible: bool) -> Progress {
        Progress::new(
            total_bytes,
            visible,
            "{msg:<32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
    }

    /// A bar counting `unit`s (items, requests, runs) up to `total`.
    pub fn count(total: u64, unit: &str, visible: bool) -> Progress {
        let template = format!("{{msg:<32!}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed}}");
        Progress::new(total, visible, &template)
    }

    /// A counter with no known end (a timed run).
    pub fn open_ended(unit: &str, visible: bool) -> Progress {
        let template = format!("{{spinner}} {{msg:<32!}} {{pos}} {unit} {{elapsed}}");
        let p = Progress::new(0, visible, &template);
        p.bar.unset_length();
        p
    }

    fn new(total: u64, visible: bool, template: &str) -> Progress {
        let drawn = visible && std::io::stderr().is_terminal();
        let bar = if drawn {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if drawn {
            // A template that fails to parse is a bug here, not bad input; fall back to the
            // default style rather than panic.
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
        Progress {
            bar,
            lines: visible && !drawn,
        }
    }

    /// The bar itself (cheap to clone and share across threads).
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Sets the message shown before the bar; the first one starts the bar ticking (elapsed
    /// time and spinner move while a step reports nothing), so it never shows without one.
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
        if !self.bar.is_hidden() {
            self.bar.enable_steady_tick(TICK);
        }
    }

    /// A line for the user: above the bar when it is drawn, a plain stderr line when progress
    /// was asked for without a terminal, nothing when quiet.
    pub fn note(&self, line: impl AsRef<str>) {
        if !self.bar.is_hidden() {
            self.bar.println(line.as_ref());
        } else if self.lines {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error path that skips `finish` must not leave a half-drawn bar under its message.
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
