//! The results table (figures × Starling, Mosquitto, ratio) printed to stdout, and BENCHMARKS.md:
//! the same table with the command, date, machine facts, scenarios and both brokers' settings.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Which direction of a figure is the good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// What the issue asks of a figure, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    None,
    /// Starling strictly ahead.
    Ahead,
    /// Starling equal or better.
    NoWorse,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub figure: String,
    pub starling: Option<f64>,
    pub mosquitto: Option<f64>,
    pub decimals: usize,
    pub better: Better,
    pub target: Target,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        match (self.starling, self.mosquitto) {
            (Some(s), Some(m)) if m > 0.0 => Some(s / m),
            _ => None,
        }
    }

    /// `Some(true)` when the row's target is met, `None` when it has none or lacks a figure.
    pub fn met(&self) -> Option<bool> {
        let (s, m) = (self.starling?, self.mosquitto?);
        match (self.target, self.better) {
            (Target::None, _) => None,
            (Target::Ahead, Better::Higher) => Some(s > m),
            (Target::Ahead, Better::Lower) => Some(s < m),
            (Target::NoWorse, Better::Higher) => Some(s >= m),
            (Target::NoWorse, Better::Lower) => Some(s <= m),
        }
    }
}

/// `1234567.8` with 0 decimals is `1,234,568`.
pub fn group(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The table as Markdown with padded columns, readable in a terminal too.
pub fn table(rows: &[Row]) -> String {
    let header = ["Figure", "Starling", "Mosquitto", "Starling/Mosquitto", "Better", "Target"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let fmt = |v: Option<f64>| v.map_or_else(|| "failed".to_string(), |v| group(v, r.decimals));
            [
                r.figure.clone(),
                fmt(r.starling),
                fmt(r.mosquitto),
                r.ratio().map_or_else(|| "—".to_string(), |x| format!("{x:.2}")),
                match r.better {
                    Better::Higher => "higher".to_string(),
                    Better::Lower => "lower".to_string(),
                },
                match (r.target, r.met()) {
                    (Target::None, _) => "—".to_string(),
                    (_, Some(true)) => "met".to_string(),
                    (_, Some(false)) => "MISSED".to_string(),
                    (_, None) => "no figure".to_string(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        out.push('|');
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            // Figures right-aligned, words left-aligned.
            if (1..=3).contains(&i) {
                let _ = write!(out, " {}{} |", " ".repeat(pad), c);
            } else {
                let _ = write!(out, " {}{} |", c, " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if (1..=3).contains(&i) {
            let _ = write!(out, " {}: |", &dashes[1..]);
        } else {
            let _ = write!(out, " {dashes} |");
        }
    }
    out.push('\n');
    for row in &cells {
        line(&mut out, row);
    }
    out
}

/// One sentence on the targets.
pub fn verdict(rows: &[Row]) -> String {
    let targeted: Vec<&Row> = rows.iter().filter(|r| r.target != Target::None).collect();
    let missed: Vec<&str> = targeted.iter().filter(|r| r.met() != Some(true)).map(|r| r.figure.as_str()).collect();
    if missed.is_empty() {
        format!("all {} targeted figures met", targeted.len())
    } else {
        format!(
            "{} of {} targeted figures met; missed: {}",
            targeted.len() - missed.len(),
            targeted.len(),
            missed.join("; ")
        )
    }
}

/// Facts about the machine the run happened on.
pub fn machine_facts() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    vec![
        ("CPUs (nproc)".into(), nproc.to_string()),
        ("CPU model".into(), model),
        ("Memory".into(), mem),
        ("Kernel".into(), format!("Linux {kernel}")),
    ]
}

/// The 1-, 5- and 15-minute load averages; other work on the machine skews every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Current UTC date and time from `date`, or seconds since the epoch if that fails.
pub fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("{secs} s since the Unix epoch")
        })
}

/// The line after which BENCHMARKS.md keeps hand-written notes across runs.
pub const NOTES_MARKER: &str =
    "<!-- Notes below this line are written by hand and kept when the benchmark rewrites this file. -->";

/// Writes `body` to `path`, keeping whatever followed the notes marker in the old file.
pub fn write_keeping_notes(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let notes = old.split_once(NOTES_MARKER).map(|(_, n)| n.trim_start_matches('\n')).unwrap_or("");
    let mut text = body.trim_end().to_string();
    text.push_str("\n\n");
    text.push_str(NOTES_MARKER);
    text.push('\n');
    if !notes.is_empty() {
        text.push('\n');
        text.push_str(notes);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: f64, m: f64, better: Better, target: Target) -> Row {
        Row { figure: "f".into(), starling: Some(s), mosquitto: Some(m), decimals: 0, better, target }
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(1_234_567.8, 0), "1,234,568");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(1000.25, 1), "1,000.2");
        assert_eq!(group(-4200.0, 0), "-4,200");
    }

    #[test]
    fn targets_follow_the_better_direction() {
        assert_eq!(row(2.0, 1.0, Better::Higher, Target::Ahead).met(), Some(true));
        assert_eq!(row(1.0, 1.0, Better::Higher, Target::Ahead).met(), Some(false));
        assert_eq!(row(1.0, 1.0, Better::Lower, Target::NoWorse).met(), Some(true));
        assert_eq!(row(1.1, 1.0, Better::Lower, Target::NoWorse).met(), Some(false));
        assert_eq!(row(1.1, 1.0, Better::Lower, Target::None).met(), None);
        assert_eq!(row(3.0, 2.0, Better::Higher, Target::None).ratio(), Some(1.5));
    }

    #[test]
    fn table_has_a_header_a_rule_and_one_line_per_row() {
        let t = table(&[row(2.0, 1.0, Better::Higher, Target::Ahead)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains("2.00") && lines[2].contains("met"), "{t}");
    }

    #[test]
    fn notes_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("B.md");
        write_keeping_notes(&p, "# one").unwrap();
        let first = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{first}\nmy notes\n")).unwrap();
        write_keeping_notes(&p, "# two").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# two") && text.ends_with("my notes\n"), "{text}");
    }
}
