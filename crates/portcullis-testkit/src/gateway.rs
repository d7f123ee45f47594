//! Running the `portcullis` binary as a process, as users and outside tests do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Redis settings for gateways in tests that kill Redis: the breaker opens within a few
/// requests and recovers fast, and calls are given time, since tests run side by side on
/// a loaded machine where a healthy Redis can take longer than the 50 ms default (an
/// outage in these tests is a killed Redis, refused at once, not a slow one).
pub const FAST_BREAKER_ENV: &[(&str, &str)] = &[
    ("PORTCULLIS_REDIS_COMMAND_TIMEOUT", "1s"),
    ("PORTCULLIS_REDIS_BREAKER_SLOW_CALL", "750ms"),
    ("PORTCULLIS_REDIS_BREAKER_MIN_CALLS", "2"),
    ("PORTCULLIS_REDIS_BREAKER_WINDOW", "5s"),
    ("PORTCULLIS_REDIS_BREAKER_OPEN_FOR", "300ms"),
    ("PORTCULLIS_REDIS_BREAKER_MAX_OPEN_FOR", "1s"),
    ("PORTCULLIS_REDIS_BREAKER_HALF_OPEN_PROBES", "1"),
];

/// A command line for the gateway binary.
#[derive(Clone, Debug)]
pub struct GatewayCmd {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The output of a run to completion.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl GatewayCmd {
    /// `bin` with no arguments; pass `env!("CARGO_BIN_EXE_portcullis")`.
    pub fn new(bin: impl AsRef<Path>) -> Self {
        Self {
            bin: bin.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(&self.args);
        // Only the variables the test sets reach the gateway.
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTCULLIS_") || k.starts_with("OTEL_") {
                c.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs to completion (for `check-config`, `config-reference`, bad configs).
    pub fn run(&self, limit: Duration) -> Finished {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let start = Instant::now();
        loop {
            if let Some(_status) = child.try_wait().expect("wait") {
                break;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("output");
        Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the gateway and waits for its `listening` log line.
    pub fn start(&self) -> GatewayProcess {
        self.start_reading_listening_from(None)
    }

    /// Starts a gateway that logs to files in `log_dir` (`log.file`), and waits for the
    /// `listening` line in one of them. Its standard output and error are still kept.
    pub fn start_logging_to(&self, log_dir: &Path) -> GatewayProcess {
        self.start_reading_listening_from(Some(log_dir))
    }

    fn start_reading_listening_from(&self, log_dir: Option<&Path>) -> GatewayProcess {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let errs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        let stdout = child.stdout.take().expect("stdout");
        let out_lines = lines.clone();
        let stdout_tx = tx;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addrs) = listening(&line) {
                    let _ = stdout_tx.send(addrs);
                }
                out_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let err_lines = errs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                err_lines.lock().unwrap().push(line);
            }
        });
        let found = match log_dir {
            None => rx.recv_timeout(Duration::from_secs(20)).ok(),
            Some(dir) => {
                let start = Instant::now();
                loop {
                    if let Some(addrs) = log_files(dir)
                        .iter()
                        .flat_map(|f| {
                            std::fs::read_to_string(f)
                                .unwrap_or_default()
                                .lines()
                                .map(str::to_owned)
                                .collect::<Vec<_>>()
                        })
                        .find_map(|l| listening(&l))
                    {
                        break Some(addrs);
                    }
                    if start.elapsed() > Duration::from_secs(20)
                        || child.try_wait().ok().flatten().is_some()
                    {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        match found {
            Some((listen, admin)) => GatewayProcess {
                child,
                listen,
                admin,
                lines,
                errs,
            },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "gateway did not start.\nstdout:\n{}\nstderr:\n{}",
                    lines.lock().unwrap().join("\n"),
                    errs.lock().unwrap().join("\n")
                );
            }
        }
    }
}

/// The listen and admin addresses of a `listening` log line.
fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
    if v["msg"] != "listening" {
        return None;
    }
    let l = v["listen"].as_str()?.parse().ok()?;
    let a = v["admin_listen"].as_str()?.parse().ok()?;
    Some((l, a))
}

/// The files of `dir` (a gateway's log files: `log.file` and its rotated siblings), sorted.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A running gateway; killed on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// The main listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    errs: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// The process's peak resident memory so far (`VmHWM`), in bytes; Linux only.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// `http://LISTEN{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The lines written to standard output so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines written to standard error so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.errs.lock().unwrap().clone()
    }

    /// Log lines parsed as JSON; panics on a line that is not JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until a log line satisfies `pred`.
    pub fn wait_for_line(
        &self,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(v) = self
                .stdout_lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| pred(v))
            {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
