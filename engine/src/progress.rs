//! Progress a person can follow: on a terminal, one bar per stage redrawn in
//! place (done/total, rate, time left); elsewhere (CI, a log file), a plain
//! line every tenth of the way; nothing with `-q`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `eprintln!` that ignores a closed stderr (`engine report 2>&1 | head`):
/// progress is never worth dying for.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

/// How often a terminal bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// One stage's progress (written to stderr, so stdout stays for results).
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    label: String,
    unit: &'static str,
    total: usize,
    done: usize,
    /// Items done before this run (resumed from the cache): not counted in the rate.
    skipped: usize,
    started: Instant,
    last_draw: Option<Instant>,
    next_line: usize,
}

impl Progress {
    pub fn new(mode: Mode, label: impl Into<String>, unit: &'static str, total: usize) -> Progress {
        Progress {
            mode,
            label: label.into(),
            unit,
            total,
            done: 0,
            skipped: 0,
            started: Instant::now(),
            last_draw: None,
            next_line: 0,
        }
    }

    /// Marks `n` items as already done (found in the cache).
    pub fn skip(&mut self, n: usize) {
        self.done += n;
        self.skipped += n;
        self.next_line = self.done;
    }

    pub fn tick(&mut self) {
        self.done += 1;
        self.draw(false);
    }

    /// A plain message, above the bar.
    pub fn note(&mut self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => note!("{text}"),
            Mode::Bar => note!("\r\x1b[2K{text}"),
        }
    }

    /// Ends the stage with a summary line.
    pub fn finish(&mut self, summary: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => note!("{}: {summary}", self.label),
            Mode::Bar => note!("\r\x1b[2K{}: {summary}", self.label),
        }
    }

    fn rate_and_eta(&self) -> (f64, f64) {
        let fresh = self.done - self.skipped;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = fresh as f64 / elapsed.max(1e-9);
        let eta = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
        (rate, eta)
    }

    fn draw(&mut self, force: bool) {
        let (rate, eta) = self.rate_and_eta();
        let (done, total, unit) = (self.done, self.total, self.unit);
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => {
                if force || done >= self.next_line || done == total {
                    note!(
                        "{}: {done:>5}/{total} {unit}  {rate:6.2} {unit}/s  about {} left",
                        self.label,
                        duration(eta)
                    );
                    self.next_line = done + total.div_ceil(10).max(1);
                }
            }
            Mode::Bar => {
                let now = Instant::now();
                if !force && done < total && self.last_draw.is_some_and(|t| now - t < REDRAW) {
                    return;
                }
                self.last_draw = Some(now);
                let filled = (BAR_WIDTH * done) / total.max(1);
                let bar: String = "█".repeat(filled) + &"░".repeat(BAR_WIDTH - filled);
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} {bar} {done}/{total} {unit}  {rate:.2} {unit}/s  {} left",
                    self.label,
                    duration(eta)
                );
                let _ = err.flush();
            }
        }
    }
}

/// `42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".to_string();
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
