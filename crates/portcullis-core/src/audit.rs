//! A tamper-evident audit log: hash-chained JSON lines.
//!
//! Each record is one line
//! `{"seq","ts","action","actor","target","outcome","request_id","prev_hash","hash"}`,
//! members in that order, compact. `hash` is the hex SHA-256 of the line's text without
//! its `hash` member (`{"seq":…,"prev_hash":"…"}`, as written), and
//! `prev_hash` is the previous record's `hash` (64 zeros for the first); `seq` counts
//! from one. Changing, removing, reordering or inserting a record breaks the chain at that
//! record, which [`verify`] reports by its `seq` (or line, when it has none).
//!
//! [`AuditLog`] appends records to a file, one `write` per record, flushed before
//! [`AuditLog::append`] returns; opening an existing file continues its chain after
//! checking its last record. The file is opened in append mode, so another process
//! appending too would break the chain: one writer per file.
//!
//! ```
//! use portcullis_core::audit::{Entry, Chain, verify};
//!
//! let mut chain = Chain::new();
//! let mut text = String::new();
//! for action in ["login", "logout"] {
//!     let entry = Entry { action, actor: "alice", target: "session", outcome: "ok", request_id: "r1" };
//!     text.push_str(&chain.record("2026-12-06T00:00:00Z", &entry));
//!     text.push('\n');
//! }
//! assert_eq!(verify(text.as_bytes()).unwrap(), 2);
//! let forged = text.replace("alice", "mallory");
//! assert_eq!(verify(forged.as_bytes()).unwrap_err().seq, Some(1));
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom, to what.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// What was done, e.g. `login`, `rate_limit.override.set`.
    pub action: &'a str,
    /// Who did it: a subject, or a client address.
    pub actor: &'a str,
    /// What it was done to.
    pub target: &'a str,
    /// `ok`, `failed`, `denied`, …
    pub outcome: &'a str,
    /// The request it happened in (empty when none).
    pub request_id: &'a str,
}

/// The chain's state: the next `seq` and the last `hash`.
#[derive(Clone, Debug)]
pub struct Chain {
    seq: u64,
    prev: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// A chain with no records yet.
    pub fn new() -> Self {
        Self {
            seq: 1,
            prev: GENESIS.to_owned(),
        }
    }

    /// The next record's line (without the newline), and the chain moved past it.
    pub fn record(&mut self, ts: &str, e: &Entry<'_>) -> String {
        let line = record_line(
            self.seq,
            [ts, e.action, e.actor, e.target, e.outcome, e.request_id],
            &self.prev,
        );
        self.seq += 1;
        self.prev = line[line.len() - 66..line.len() - 2].to_owned();
        line
    }
}

/// A record's line: its members in order, compact, `hash` over the text before it.
fn record_line(seq: u64, texts: [&str; 6], prev: &str) -> String {
    let mut body = format!("{{\"seq\":{seq}");
    for (name, value) in FIELDS[1..7].iter().zip(texts) {
        body.push_str(&format!(",\"{name}\":{}", Value::from(value)));
    }
    body.push_str(&format!(",\"prev_hash\":{}}}", Value::from(prev)));
    let hash = sha256_hex(body.as_bytes());
    body.pop();
    body.push_str(",\"hash\":\"");
    body.push_str(&hash);
    body.push_str("\"}");
    body
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = digest(&SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where and why a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {}{}: {reason}", seq.map_or_else(|| "?".to_owned(), |s| s.to_string()), format!(" (line {line})"))]
pub struct Broken {
    /// The `seq` of the first bad record, when it has one.
    pub seq: Option<u64>,
    /// Its line, from 1.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// The members of a record, in order.
const FIELDS: [&str; 9] = [
    "seq",
    "ts",
    "action",
    "actor",
    "target",
    "outcome",
    "request_id",
    "prev_hash",
    "hash",
];

/// Checks a whole audit log: every line a record with the fields in order, `seq`
/// 1, 2, 3, …, each `prev_hash` the previous `hash`, each `hash` right. Returns the
/// number of records, or the first bad one.
pub fn verify(reader: impl Read) -> Result<u64, Broken> {
    let mut prev = GENESIS.to_owned();
    let mut expected: u64 = 1;
    for (line_no, line) in (1u64..).zip(BufReader::new(reader).split(b'\n')) {
        let broken = |seq, reason: &str| Broken {
            seq,
            line: line_no,
            reason: reason.to_owned(),
        };
        let line = line.map_err(|e| broken(None, &format!("cannot read: {e}")))?;
        let text = std::str::from_utf8(&line).map_err(|_| broken(None, "not UTF-8"))?;
        let value: Value =
            serde_json::from_str(text).map_err(|_| broken(None, "not a JSON record"))?;
        let Value::Object(m) = value else {
            return Err(broken(None, "not a JSON object"));
        };
        let seq = m.get("seq").and_then(Value::as_u64);
        let mut names: Vec<&str> = m.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = FIELDS;
        want.sort_unstable();
        if names != want {
            return Err(broken(seq, "members missing or extra"));
        }
        if seq != Some(expected) {
            return Err(broken(
                seq,
                &format!("expected seq {expected}: a record is missing, repeated or moved"),
            ));
        }
        if m["prev_hash"].as_str() != Some(prev.as_str()) {
            return Err(broken(seq, "prev_hash is not the previous record's hash"));
        }
        let mut texts = [""; 6];
        for (slot, name) in texts.iter_mut().zip(&FIELDS[1..7]) {
            *slot = m[*name]
                .as_str()
                .ok_or_else(|| broken(seq, &format!("{name} is not a string")))?;
        }
        // The record as it must be written: any other spelling, or a wrong hash, is a
        // change.
        let canonical = record_line(expected, texts, &prev);
        if canonical != text {
            return Err(broken(
                seq,
                "hash does not match the record: it was changed",
            ));
        }
        let hash = &canonical[canonical.len() - 66..canonical.len() - 2];
        prev = hash.to_owned();
        expected += 1;
    }
    Ok(expected - 1)
}

/// An audit log file, appended to by one process.
#[derive(Debug)]
pub struct AuditLog {
    inner: Mutex<(File, Chain)>,
}

impl AuditLog {
    /// Opens (or creates) `path` and continues its chain. Refuses a file whose last
    /// record is not a valid record (a chain cannot be continued from it).
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let chain = continue_chain(&mut file)?;
        Ok(Self {
            inner: Mutex::new((file, chain)),
        })
    }

    /// Appends one record stamped `ts`, written and flushed before it returns.
    pub fn append(&self, ts: &str, entry: &Entry<'_>) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (file, chain) = &mut *g;
        let mut next = chain.clone();
        let mut line = next.record(ts, entry);
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.flush()?;
        // Only a written record advances the chain.
        *chain = next;
        Ok(())
    }
}

/// The chain after the file's last record.
fn continue_chain(file: &mut File) -> io::Result<Chain> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(Chain::new());
    }
    // The last line: read back at most 64 KiB.
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let last = text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or("");
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let v: Value = serde_json::from_str(last)
        .map_err(|_| bad("its last line is not an audit record; move the file aside"))?;
    let seq = v["seq"]
        .as_u64()
        .ok_or_else(|| bad("its last record has no seq"))?;
    let hash = v["hash"]
        .as_str()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| bad("its last record has no hash"))?;
    Ok(Chain {
        seq: seq + 1,
        prev: hash.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry<'_> {
        Entry {
            action,
            actor: "alice",
            target: "t",
            outcome: "ok",
            request_id: "r",
        }
    }

    fn log(n: usize) -> Vec<String> {
        let mut c = Chain::new();
        (0..n)
            .map(|i| c.record(&format!("2026-12-06T00:00:{i:02}Z"), &entry("a\"\u{1}é")))
            .collect()
    }

    fn joined(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_every_kind_of_tampering_is_found() {
        let lines = log(5);
        assert_eq!(verify(joined(&lines).as_bytes()), Ok(5));
        assert_eq!(verify(&b""[..]), Ok(0));

        let mut changed = lines.clone();
        changed[2] = changed[2].replace("alice", "mallory");
        assert_eq!(
            verify(joined(&changed).as_bytes()).unwrap_err().seq,
            Some(3)
        );

        let mut removed = lines.clone();
        removed.remove(1);
        let e = verify(joined(&removed).as_bytes()).unwrap_err();
        assert_eq!((e.seq, e.line), (Some(3), 2));

        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(
            verify(joined(&swapped).as_bytes()).unwrap_err().seq,
            Some(5)
        );

        // Rewriting a record with a correct hash still breaks the next one's prev_hash.
        let mut c = Chain::new();
        let mut forged: Vec<String> = (0..5)
            .map(|i| {
                let who = if i == 1 { "mallory" } else { "alice" };
                c.record(
                    &format!("2026-12-06T00:00:{i:02}Z"),
                    &Entry {
                        actor: who,
                        ..entry("a\"\u{1}é")
                    },
                )
            })
            .collect();
        forged[2] = lines[2].clone();
        assert_eq!(verify(joined(&forged).as_bytes()).unwrap_err().seq, Some(3));

        let mut garbage = lines.clone();
        garbage.insert(2, "not json".into());
        let e = verify(joined(&garbage).as_bytes()).unwrap_err();
        assert_eq!((e.seq, e.line), (None, 3));

        let mut truncated = joined(&lines);
        truncated.truncate(truncated.len() - 10);
        assert_eq!(verify(truncated.as_bytes()).unwrap_err().line, 5);
    }

    #[test]
    fn a_reopened_file_continues_its_chain() {
        let dir = std::env::temp_dir().join(format!("portcullis-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        {
            let log = AuditLog::open(&path).unwrap();
            log.append("t1", &entry("one")).unwrap();
            log.append("t2", &entry("two")).unwrap();
        }
        let log = AuditLog::open(&path).unwrap();
        log.append("t3", &entry("three")).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(verify(&text[..]), Ok(3));
        std::fs::write(&path, b"{\"broken\n").unwrap();
        assert!(
            AuditLog::open(&path).is_err(),
            "a chain is not continued from garbage"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
