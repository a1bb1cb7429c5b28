//! Progress display for the long operations a person waits for (a node
//! signing and uploading a large export, the demo).
//!
//! Drawn on stderr, and only when stderr is a terminal: piped or redirected
//! output (scripts, CI, logs) gets no bars and no control characters. Every
//! constructor returns a working value either way, so callers never branch
//! on whether progress is shown.

use std::borrow::Cow;
use std::io::{IsTerminal, Read};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Returns true if and only if stderr is a terminal, i.e. progress would be seen.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// One progress line: a bar with a known length, or a spinner.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

/// How often a spinner redraws while the work gives no updates.
const SPIN: Duration = Duration::from_millis(120);

impl Progress {
    /// Shows nothing, whatever stderr is.
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// A bar of `len` steps counted in `unit` (e.g. "snapshots"), shown if
    /// `show` and stderr is a terminal.
    pub fn steps(
        show: bool,
        len: u64,
        unit: &str,
        message: impl Into<Cow<'static, str>>,
    ) -> Progress {
        let template =
            format!("{{spinner}} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}})");
        Progress::styled(show, Some(len), &template, message)
    }

    /// A bar over `len` bytes (e.g. of a file being parsed), shown if `show`
    /// and stderr is a terminal.
    pub fn bytes(show: bool, len: u64, message: impl Into<Cow<'static, str>>) -> Progress {
        Progress::styled(
            show,
            Some(len),
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            message,
        )
    }

    /// A spinner with a message, for work of unknown length, shown if `show`
    /// and stderr is a terminal.
    pub(crate) fn spinner(show: bool, message: impl Into<Cow<'static, str>>) -> Progress {
        Progress::styled(show, None, "{spinner} {msg} ({elapsed})", message)
    }

    fn styled(
        show: bool,
        len: Option<u64>,
        template: &str,
        message: impl Into<Cow<'static, str>>,
    ) -> Progress {
        if !(show && stderr_is_terminal()) {
            return Progress::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        // The templates above are fixed and valid; fall back to the default
        // style rather than fail an operation over its decoration.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        // A bar dropped early (an error ended the work) leaves no trace.
        let bar = bar.with_finish(ProgressFinish::AndClear);
        bar.set_message(message);
        bar.enable_steady_tick(SPIN);
        Progress { bar }
    }

    /// Returns true if and only if this progress line is drawn.
    #[cfg(test)]
    pub(crate) fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Steps (or bytes) counted so far.
    #[cfg(test)]
    pub(crate) fn position(&self) -> u64 {
        self.bar.position()
    }

    pub(crate) fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
    }

    pub(crate) fn inc(&self, steps: u64) {
        self.bar.inc(steps);
    }

    /// Wraps a reader so that bytes read advance the bar.
    pub(crate) fn wrap_read<R: Read>(&self, reader: R) -> impl Read {
        self.bar.wrap_read(reader)
    }

    /// Removes the line from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_progress_counts_and_reads_through() {
        let p = Progress::steps(false, 3, "steps", "work");
        assert!(!p.is_shown());
        p.inc(2);
        assert_eq!(p.position(), 2);
        let mut out = String::new();
        p.wrap_read(&b"abc"[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "abc");
        // Bytes read through it count too.
        assert_eq!(p.position(), 5);
        p.finish();
    }
}
