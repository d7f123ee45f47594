//! The log file: rotated hourly or daily on an injected [`Clock`], `retain` files kept.
//!
//! Files are named as before (tracing-appender's scheme): `{name}.YYYY-MM-DD` daily,
//! `{name}.YYYY-MM-DD-HH` hourly, `{name}` with rotation `never`; times in UTC.
//!
//! A line goes to the file of *its own* period: a JSON line's period is read from its
//! `ts` (which the formatter writes first, from the same clock), any other line's from
//! the clock when it is written. So lines that were logged before a boundary but reach
//! the writer after it (they queue behind the log thread and a write buffer) still land
//! in the earlier file, and a line is never split across files: bytes after the last
//! newline of a write wait for the rest of their line. Each line is written once.
//!
//! Whenever a file is created, the oldest files beyond `retain` (the new one included)
//! are deleted. A line that arrives for a period so old that its file was already
//! deleted is dropped with that period, as retention says.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_core::Clock;
use time::OffsetDateTime;

use crate::config::Rotation;

/// A log file rotated by period, keeping `retain` files.
#[derive(Debug)]
pub struct RollingWriter {
    dir: PathBuf,
    name: String,
    rotation: Rotation,
    retain: usize,
    clock: Arc<dyn Clock>,
    /// The open file and its period's suffix (`""` for `never`).
    current: Option<(String, File)>,
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
}

impl RollingWriter {
    /// A writer of `dir/name…`; opens (or creates) the current period's file now, so an
    /// unwritable directory is found at start-up.
    pub fn new(
        dir: &Path,
        name: &str,
        rotation: Rotation,
        retain: usize,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        let mut w = Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            rotation,
            retain: retain.max(1),
            clock,
            current: None,
            partial: Vec::new(),
        };
        let period = w.clock_period();
        w.switch(&period)?;
        Ok(w)
    }

    /// The file name of a period.
    fn file_name(&self, period: &str) -> String {
        if period.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{period}", self.name)
        }
    }

    /// The period of the clock's current time.
    fn clock_period(&self) -> String {
        let t = OffsetDateTime::from(self.clock.system_time());
        self.period_of(t.year(), u8::from(t.month()), t.day(), t.hour())
    }

    fn period_of(&self, year: i32, month: u8, day: u8, hour: u8) -> String {
        match self.rotation {
            Rotation::Never => String::new(),
            Rotation::Daily => format!("{year:04}-{month:02}-{day:02}"),
            Rotation::Hourly => format!("{year:04}-{month:02}-{day:02}-{hour:02}"),
        }
    }

    /// A JSON line's period, from the `ts` its formatter wrote first
    /// (`{"ts":"YYYY-MM-DDTHH:…`); `None` for other lines.
    fn line_period(&self, line: &[u8]) -> Option<String> {
        let ts = line.strip_prefix(b"{\"ts\":\"")?.get(..13)?;
        let digits = |r: std::ops::Range<usize>| ts[r].iter().all(u8::is_ascii_digit);
        if !(digits(0..4) && ts[4] == b'-' && digits(5..7) && ts[7] == b'-' && digits(8..10))
            || ts[10] != b'T'
            || !digits(11..13)
        {
            return None;
        }
        let s = std::str::from_utf8(ts).ok()?;
        Some(match self.rotation {
            Rotation::Never => String::new(),
            Rotation::Daily => s[..10].to_owned(),
            Rotation::Hourly => format!("{}-{}", &s[..10], &s[11..13]),
        })
    }

    /// Makes `period`'s file the current one, pruning old files when it had to be
    /// created. `false` when the period is older than every file kept: its lines go
    /// nowhere.
    fn switch(&mut self, period: &str) -> io::Result<bool> {
        if self.current.as_ref().is_some_and(|(p, _)| p == period) {
            return Ok(true);
        }
        if let Some((_, f)) = &mut self.current {
            f.flush()?;
        }
        let path = self.dir.join(self.file_name(period));
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        self.current = Some((period.to_owned(), file));
        if !existed {
            self.prune();
        }
        Ok(self.current.is_some())
    }

    /// Deletes the oldest rotated files beyond `retain`; forgets the current file if it
    /// was one of them.
    fn prune(&mut self) {
        if matches!(self.rotation, Rotation::Never) {
            return;
        }
        let prefix = format!("{}.", self.name);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut periods: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
            .filter(|p| is_period(p))
            .collect();
        periods.sort();
        let excess = periods.len().saturating_sub(self.retain);
        for old in &periods[..excess] {
            let _ = std::fs::remove_file(self.dir.join(self.file_name(old)));
            if self.current.as_ref().is_some_and(|(p, _)| p == old) {
                self.current = None;
            }
        }
    }

    /// Writes complete lines, each to its period's file, consecutive lines of one period
    /// together.
    fn write_lines(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let end = memchr_newline(data).map_or(data.len(), |i| i + 1);
            let period = self
                .line_period(&data[..end])
                .unwrap_or_else(|| self.clock_period());
            // Following lines of the same period go in the same write.
            let mut run = end;
            while run < data.len() {
                let next = memchr_newline(&data[run..]).map_or(data.len(), |i| run + i + 1);
                let p = self
                    .line_period(&data[run..next])
                    .unwrap_or_else(|| self.clock_period());
                if p != period {
                    break;
                }
                run = next;
            }
            if self.switch(&period)?
                && let Some((_, f)) = &mut self.current
            {
                f.write_all(&data[..run])?;
            }
            data = &data[run..];
        }
        Ok(())
    }
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|b| *b == b'\n')
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-HH`.
fn is_period(p: &str) -> bool {
    let b = p.as_bytes();
    (b.len() == 10 || b.len() == 13)
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 4 | 7 | 10) {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

impl Write for RollingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Whole lines now; the bytes after the last newline wait for the rest of theirs.
        let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
            self.partial.extend_from_slice(buf);
            return Ok(buf.len());
        };
        if self.partial.is_empty() {
            self.write_lines(&buf[..=last])?;
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(&buf[..=last]);
            self.write_lines(&joined)?;
        }
        self.partial.extend_from_slice(&buf[last + 1..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((_, f)) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for RollingWriter {
    fn drop(&mut self) {
        // A last line without its newline is still written, not lost.
        if !self.partial.is_empty() {
            let mut rest = std::mem::take(&mut self.partial);
            rest.push(b'\n');
            let _ = self.write_lines(&rest);
        }
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::ManualClock;
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Mutex;
    use std::time::Duration;

    fn temp_dir(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("portcullis-rolling-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn files(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// A JSON line stamped by `clock`, as the formatter writes them.
    fn line(clock: &ManualClock, thread: usize, seq: usize) -> String {
        let ts = OffsetDateTime::from(clock.system_time())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        format!("{{\"ts\":\"{ts}\",\"thread\":{thread},\"seq\":{seq}}}\n")
    }

    #[test]
    fn concurrent_lines_across_boundaries_land_once_in_their_own_period_and_retain_holds() {
        let dir = temp_dir("concurrent");
        let clock = ManualClock::new();
        let retain = 3;
        let writer = RollingWriter::new(
            &dir,
            "gw.log",
            Rotation::Hourly,
            retain,
            Arc::new(clock.clone()),
        )
        .unwrap();
        // As in the gateway: one writer behind a lock, fed by several loggers; some
        // writes carry several lines, some a line cut in two.
        let writer = Arc::new(Mutex::new(writer));
        const THREADS: usize = 4;
        const LINES: usize = 2000;
        let written: Mutex<Vec<(u64, u64, String)>> = Mutex::default();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (writer, clock, written) = (writer.clone(), clock.clone(), &written);
                s.spawn(move || {
                    let mut seq = 0;
                    while seq < LINES {
                        let mut chunk = String::new();
                        for _ in 0..(1 + seq % 3).min(LINES - seq) {
                            let l = line(&clock, t, seq);
                            let ts = &l[7..20];
                            let period = format!("{}-{}", &ts[..10], &ts[11..13]);
                            written.lock().unwrap().push((t as u64, seq as u64, period));
                            chunk.push_str(&l);
                            seq += 1;
                        }
                        let mut w = writer.lock().unwrap();
                        if seq % 7 == 0 {
                            let (a, b) = chunk.split_at(chunk.len() / 2);
                            w.write_all(a.as_bytes()).unwrap();
                            w.write_all(b.as_bytes()).unwrap();
                        } else {
                            w.write_all(chunk.as_bytes()).unwrap();
                        }
                    }
                });
            }
            // Meanwhile the clock crosses six hour boundaries, one per 1,100 lines logged,
            // so every period gets lines whatever the machine's speed.
            let (clock, written) = (clock.clone(), &written);
            s.spawn(move || {
                let start = std::time::Instant::now();
                for i in 1..=6 {
                    while written.lock().unwrap().len() < i * 1100
                        && start.elapsed() < Duration::from_secs(20)
                    {
                        std::thread::yield_now();
                    }
                    clock.advance(Duration::from_secs(3600));
                }
            });
        });
        drop(writer);

        let files = files(&dir);
        assert_eq!(files.len(), retain, "retain holds: {:?}", files.keys());
        assert!(
            files.values().all(|t| !t.is_empty()),
            "lines were logged in every kept period"
        );
        let mut seen = HashSet::new();
        for (name, text) in &files {
            let period = name.strip_prefix("gw.log.").expect("rotated name");
            assert_eq!(period.len(), 13, "{name}");
            for l in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}"));
                let ts = v["ts"].as_str().unwrap();
                assert_eq!(
                    format!("{}-{}", &ts[..10], &ts[11..13]),
                    period,
                    "a line in another period's file"
                );
                assert!(
                    seen.insert((v["thread"].as_u64().unwrap(), v["seq"].as_u64().unwrap())),
                    "a line written twice: {l}"
                );
            }
        }
        // Every line of a kept period is there; the others went with their files.
        let kept: Vec<&String> = files.keys().collect();
        let expected: HashSet<(u64, u64)> = written
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|(_, _, p)| kept.iter().any(|k| k.ends_with(p.as_str())))
            .map(|(t, s, _)| (t, s))
            .collect();
        assert_eq!(seen.len(), expected.len(), "lines lost from kept periods");
        assert_eq!(seen, expected);
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        let newest = kept.last().unwrap();
        assert!(
            newest.ends_with(&format!(
                "{:02}",
                OffsetDateTime::from(clock.system_time()).hour()
            )),
            "{newest}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_line_is_kept_when_retain_covers_every_period() {
        let dir = temp_dir("complete");
        let clock = ManualClock::new();
        let mut w =
            RollingWriter::new(&dir, "gw.log", Rotation::Daily, 10, Arc::new(clock.clone()))
                .unwrap();
        let mut written = 0;
        for day in 0..4 {
            for seq in 0..50 {
                w.write_all(line(&clock, day, seq).as_bytes()).unwrap();
                written += 1;
            }
            clock.advance(Duration::from_secs(86_400));
        }
        // A plain line without a newline, then dropped: written to the clock's period.
        w.write_all(b"last words").unwrap();
        drop(w);
        let files = files(&dir);
        assert_eq!(files.len(), 5, "{:?}", files.keys());
        let total: usize = files.values().map(|t| t.lines().count()).sum();
        assert_eq!(total, written + 1);
        assert!(files.values().any(|t| t.ends_with("last words\n")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn never_keeps_one_file_with_the_plain_name() {
        let dir = temp_dir("never");
        let clock = ManualClock::new();
        let mut w = RollingWriter::new(&dir, "gw.log", Rotation::Never, 1, Arc::new(clock.clone()))
            .unwrap();
        for _ in 0..3 {
            w.write_all(line(&clock, 0, 0).as_bytes()).unwrap();
            clock.advance(Duration::from_secs(86_400 * 2));
        }
        drop(w);
        let files = files(&dir);
        assert_eq!(files.keys().collect::<Vec<_>>(), ["gw.log"]);
        assert_eq!(files["gw.log"].lines().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
