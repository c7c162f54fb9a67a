//! Progress of a long job on stderr: an indicatif bar when stderr is a terminal; otherwise (a
//! log file, a pipe, CI) a plain line when the job starts, one every [`PLAIN_EVERY`], and one
//! when it ends, so a long build is never silent.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a plain progress line is written.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Things, by this name ("blocks").
    Items(&'static str),
    /// Bytes, shown in MB.
    Bytes,
}

impl Unit {
    fn show(self, n: u64) -> String {
        match self {
            Unit::Items(_) => n.to_string(),
            Unit::Bytes => format!("{:.1}", n as f64 / 1e6),
        }
    }

    fn show_rate(self, per_s: f64) -> String {
        match self {
            Unit::Items(_) => format!("{per_s:.1}"),
            Unit::Bytes => format!("{:.1}", per_s / 1e6),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Items(name) => name,
            Unit::Bytes => "MB",
        }
    }
}

enum Display {
    Hidden,
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
}

struct Plain {
    done: u64,
    last: Instant,
}

/// One job's progress.
pub struct Progress {
    label: String,
    unit: Unit,
    total: Option<u64>,
    start: Instant,
    display: Display,
}

impl Progress {
    /// Shows progress on stderr (a bar on a terminal, plain lines elsewhere).
    pub fn new(label: &str, unit: Unit, total: Option<u64>) -> Self {
        let display = if std::io::stderr().is_terminal() {
            Display::Bar(bar(label, unit, total))
        } else {
            Display::Plain(Mutex::new(Plain {
                done: 0,
                last: Instant::now(),
            }))
        };
        let p = Progress {
            label: label.to_string(),
            unit,
            total,
            start: Instant::now(),
            display,
        };
        if matches!(p.display, Display::Plain(_)) {
            eprintln!("{}", p.line(0));
        }
        p
    }

    /// Shows nothing.
    pub fn hidden() -> Self {
        Progress {
            label: String::new(),
            unit: Unit::Items(""),
            total: None,
            start: Instant::now(),
            display: Display::Hidden,
        }
    }

    /// `label` shown when `Some`, else nothing.
    pub fn optional(label: Option<&str>, unit: Unit, total: Option<u64>) -> Self {
        label.map_or_else(Self::hidden, |l| Self::new(l, unit, total))
    }

    /// Sets how much is done.
    pub fn set(&self, done: u64) {
        match &self.display {
            Display::Hidden => {}
            Display::Bar(bar) => bar.set_position(done),
            Display::Plain(plain) => {
                let mut p = plain.lock().unwrap_or_else(|e| e.into_inner());
                p.done = done;
                if p.last.elapsed() >= PLAIN_EVERY {
                    p.last = Instant::now();
                    eprintln!("{}", self.line(done));
                }
            }
        }
    }

    /// Adds `n` to what is done.
    pub fn inc(&self, n: u64) {
        let done = match &self.display {
            Display::Hidden => return,
            Display::Bar(bar) => bar.position() + n,
            Display::Plain(plain) => plain.lock().unwrap_or_else(|e| e.into_inner()).done + n,
        };
        self.set(done);
    }

    /// Clears the bar, or writes the last plain line.
    pub fn finish(&self) {
        match &self.display {
            Display::Hidden => {}
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Plain(plain) => {
                let done = plain.lock().unwrap_or_else(|e| e.into_inner()).done;
                eprintln!(
                    "{}: {} {} in {:.1} s",
                    self.label,
                    self.unit.show(done),
                    self.unit.name(),
                    self.start.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// "label: done/total unit (p%), rate/s, ETA t".
    fn line(&self, done: u64) -> String {
        let seconds = self.start.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        let name = self.unit.name();
        let mut s = format!("{}: {}", self.label, self.unit.show(done));
        if let Some(total) = self.total {
            s += &format!("/{} {name}", self.unit.show(total));
            if total > 0 {
                s += &format!(" ({:.1}%)", 100.0 * done as f64 / total as f64);
            }
        } else {
            s += &format!(" {name}");
        }
        if done > 0 {
            s += &format!(", {} {name}/s", self.unit.show_rate(rate));
            if let (Some(total), true) = (self.total, rate > 0.0) {
                let left = total.saturating_sub(done) as f64 / rate;
                s += &format!(", ETA {left:.0} s");
            }
        }
        s
    }
}

fn bar(label: &str, unit: Unit, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = match (unit, total) {
        (Unit::Items(name), Some(_)) => format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {name}, {{per_sec}}, ETA {{eta}} ({{elapsed}})"
        ),
        (Unit::Items(name), None) => format!("{{msg}} {{pos}} {name}, {{per_sec}} ({{elapsed}})"),
        (Unit::Bytes, Some(_)) => {
            "{msg} [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, ETA {eta} ({elapsed})".into()
        }
        (Unit::Bytes, None) => "{msg} {bytes}, {bytes_per_sec} ({elapsed})".into(),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}
