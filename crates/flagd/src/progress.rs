//! How `flagd import` shows its progress on standard error: a bar on a terminal, plain lines
//! when standard error is a file or a pipe (a CI log, `2>import.log`), where a redrawn bar
//! would be a wall of carriage returns.
//!
//! Each step of an import ([`ImportStep`]) has a line: reading the file, checking its items,
//! writing them in one transaction. On a terminal each shows as a bar that redraws in place
//! and is cleared at the end, so the command's own output (one summary line) stands alone. In
//! plain form each step writes one line when it starts, then a line at every tenth of a step
//! of [`STEPS_FROM`] items or more, and a line whenever [`PLAIN_INTERVAL`] passes without one:
//! small imports stay quiet, long ones show they are alive.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::admin::ImportStep;

/// Plain form: the longest time without a line while a step goes on.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Plain form: steps of at least this many items get a line at every tenth.
pub const STEPS_FROM: usize = 1000;

/// The progress of one import, shown on standard error. Share it by reference with the import
/// ([`ImportDisplay::show`] takes `&self`), then [`ImportDisplay::finish`] it.
pub struct ImportDisplay {
    inner: Mutex<Inner>,
}

enum Inner {
    Bar(Bar),
    Plain(Plain),
}

impl ImportDisplay {
    /// A display for importing `file`: a bar when standard error is a terminal, plain lines
    /// otherwise.
    pub fn for_stderr(file: &Path) -> ImportDisplay {
        let inner = if std::io::stderr().is_terminal() {
            Inner::Bar(Bar::new(file))
        } else {
            Inner::Plain(Plain::new(file, Box::new(std::io::stderr())))
        };
        ImportDisplay {
            inner: Mutex::new(inner),
        }
    }

    /// Shows where the import is.
    pub fn show(&self, step: ImportStep) {
        let now = Instant::now();
        match &mut *self.lock() {
            Inner::Bar(bar) => bar.show(step),
            Inner::Plain(plain) => plain.show(step, now),
        }
    }

    /// Ends the display: a bar is cleared, so what the command prints next stands alone.
    pub fn finish(&self) {
        if let Inner::Bar(bar) = &mut *self.lock() {
            bar.finish();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while drawing leaves nothing inconsistent worth refusing to draw again.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which step is shown, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Checking(usize),
    Writing(usize),
}

impl Phase {
    /// The step and how far it is.
    fn of(step: ImportStep) -> (Phase, usize) {
        match step {
            ImportStep::Reading => (Phase::Reading, 0),
            ImportStep::Checking { done, total } => (Phase::Checking(total), done),
            ImportStep::Writing { done, total } => (Phase::Writing(total), done),
        }
    }

    fn total(self) -> usize {
        match self {
            Phase::Reading => 0,
            Phase::Checking(total) | Phase::Writing(total) => total,
        }
    }
}

/// `1 item`, `20000 items`.
fn items(n: usize) -> String {
    if n == 1 {
        "1 item".to_owned()
    } else {
        format!("{n} items")
    }
}

/// The terminal form: one bar, restyled for each step.
struct Bar {
    bar: ProgressBar,
    file: String,
    phase: Option<Phase>,
}

impl Bar {
    fn new(file: &Path) -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        Bar {
            bar,
            file: file.display().to_string(),
            phase: None,
        }
    }

    fn show(&mut self, step: ImportStep) {
        let (phase, done) = Phase::of(step);
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            let (style, message) = match phase {
                Phase::Reading => (
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}"),
                    format!("reading {}", self.file),
                ),
                Phase::Checking(total) => (
                    ProgressStyle::with_template(BAR_TEMPLATE),
                    format!("checking {}", items(total)),
                ),
                Phase::Writing(total) => (
                    ProgressStyle::with_template(BAR_TEMPLATE),
                    format!("writing {}", items(total)),
                ),
            };
            // The new step's size first, so the bar is never drawn with the last step's.
            self.bar.set_length(phase.total() as u64);
            self.bar.set_position(0);
            self.bar.reset_elapsed();
            self.bar.set_message(message);
            // The templates are constants that parse; a bad one would only lose the styling.
            if let Ok(style) = style {
                self.bar.set_style(style.progress_chars("=> "));
            }
        }
        self.bar.set_position(done as u64);
        if phase == Phase::Reading {
            self.bar.tick();
        }
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The bar of the checking and writing steps.
const BAR_TEMPLATE: &str = "{msg:<24} [{bar:30}] {pos}/{len} ({percent}%) {elapsed}";

/// The plain form: lines, written as they come.
struct Plain {
    out: Box<dyn Write + Send>,
    file: String,
    phase: Option<Phase>,
    /// When the last line was written.
    last_line: Instant,
    /// The last tenth of the step a line was written for.
    last_tenth: usize,
}

impl Plain {
    fn new(file: &Path, out: Box<dyn Write + Send>) -> Plain {
        Plain {
            out,
            file: file.display().to_string(),
            phase: None,
            last_line: Instant::now(),
            last_tenth: 0,
        }
    }

    fn show(&mut self, step: ImportStep, now: Instant) {
        let (phase, done) = Phase::of(step);
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.last_tenth = 0;
            let line = match phase {
                Phase::Reading => format!("import: reading {}", self.file),
                Phase::Checking(total) => format!("import: checking {}", items(total)),
                Phase::Writing(total) => {
                    format!("import: writing {} in one transaction", items(total))
                }
            };
            self.line(&line, now);
            return;
        }
        let total = phase.total();
        if total == 0 {
            return;
        }
        let tenth = done * 10 / total;
        let at_tenth = total >= STEPS_FROM && tenth > self.last_tenth;
        if at_tenth || now.duration_since(self.last_line) >= PLAIN_INTERVAL {
            self.last_tenth = tenth;
            let verb = match phase {
                Phase::Writing(_) => "written",
                _ => "checked",
            };
            let percent = done * 100 / total;
            self.line(&format!("import: {verb} {done}/{total} ({percent}%)"), now);
        }
    }

    fn line(&mut self, line: &str, now: Instant) {
        // Progress is a courtesy: a closed standard error must not fail the import.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.last_line = now;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer whose lines the test reads back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn plain_lines_mark_each_step_and_each_tenth_of_a_large_one() {
        let lines = Lines::default();
        let mut plain = Plain::new(Path::new("big.json"), Box::new(lines.clone()));
        let now = Instant::now();
        plain.show(ImportStep::Reading, now);
        for done in 0..=2000 {
            plain.show(ImportStep::Checking { done, total: 2000 }, now);
        }
        for done in 0..=2000 {
            plain.show(ImportStep::Writing { done, total: 2000 }, now);
        }
        let text = lines.text();
        let shown: Vec<&str> = text.lines().collect();
        assert_eq!(shown.len(), 1 + 2 * 11, "{text}");
        assert_eq!(shown[0], "import: reading big.json");
        assert_eq!(shown[1], "import: checking 2000 items");
        assert_eq!(shown[2], "import: checked 200/2000 (10%)");
        assert_eq!(shown[11], "import: checked 2000/2000 (100%)");
        assert_eq!(shown[12], "import: writing 2000 items in one transaction");
        assert_eq!(shown[13], "import: written 200/2000 (10%)");
        assert_eq!(shown[22], "import: written 2000/2000 (100%)");
    }

    #[test]
    fn a_small_step_gets_a_line_only_when_it_takes_a_while() {
        let lines = Lines::default();
        let mut plain = Plain::new(Path::new("f.json"), Box::new(lines.clone()));
        let start = Instant::now();
        plain.show(ImportStep::Writing { done: 0, total: 3 }, start);
        plain.show(ImportStep::Writing { done: 1, total: 3 }, start);
        let later = start + PLAIN_INTERVAL;
        plain.show(ImportStep::Writing { done: 2, total: 3 }, later);
        plain.show(ImportStep::Writing { done: 3, total: 3 }, later);
        assert_eq!(
            lines.text(),
            "import: writing 3 items in one transaction\nimport: written 2/3 (66%)\n"
        );
    }
}
