//! The command line of `portcullis-load`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

/// The usage text printed by `--help` and after a usage error.
pub const USAGE: &str = "\
portcullis-load: open-loop HTTP load at a fixed rate, with a rate-limit accuracy table

USAGE:
    portcullis-load --target URL [--target URL ...] --rate N [OPTIONS]

LOAD:
    --target URL         a gateway to drive, e.g. http://127.0.0.1:8080 (repeatable:
                         requests go round-robin, and each client's requests rotate over
                         the targets)
    --rate N             requests started per second, on schedule whatever the latency
    --duration D         how long to start requests (default 10s; 500ms, 2m, 1.5s ...)
    --max-in-flight N    at most N requests outstanding (default 256); a request due while
                         N are outstanding is skipped and counted, never sent late
    --path P             the request path and query (default /)
    --header 'K: V'      an extra request header (repeatable)
    --timeout D          per-request timeout (default 5s); counts as an error
    --threads N          tokio worker threads (default 1)

CLIENT IDENTITY (one of):
    --xff-pool N         N clients: X-Forwarded-For from N distinct addresses, round-robin
                         (198.18.0.0/15, then 10.0.0.0/8); the gateway must trust the peer
                         (trusted_proxies = [\"127.0.0.1/32\"])
    --xff-offset N       start the pool N addresses in (fresh clients for another run)
    --bearer TOKEN       Authorization: Bearer TOKEN (repeatable: one client per token)
    (neither: one client, the load tool's own address)

ACCOUNTING:
    --burst B            GCRA burst of every policy (default: assumed = the policy's q)
    --burst NAME=B       the burst of one policy (repeatable)
    --slack D            extra tolerance (default 0) for a gateway whose clock is not this
                         machine's: a 429 is false only if an ideal GCRA, given the requests
                         this client got through (each at its response time), would have
                         allowed it D before it was sent; the sliding window is w - D long

OUTPUT:
    --json FILE          raw counts (totals, per policy, per client) as JSON
    --csv FILE           one line per request: sent_us,client,target,status,latency_us,...
    --max-errors N|P%    transport errors (connect, timeout, ...) tolerated before the exit
                         code is 1 (default 1%)
    --strict             exit 3 if any policy shows allowed-beyond-limit or false 429s
    -h, --help           this text

EXIT CODES: 0 ok; 1 too many transport errors; 2 usage or setup error; 3 --strict failed.
";

/// Who each request claims to come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No identity header: every request comes from the load tool's own address, one client.
    Peer,
    /// `X-Forwarded-For` from a pool of `size` addresses starting `offset` into the range.
    ForwardedFor {
        /// Number of distinct addresses (clients).
        size: u32,
        /// Index of the first address used.
        offset: u32,
    },
    /// `Authorization: Bearer <token>`, one client per token.
    Bearer(Vec<String>),
}

impl Identity {
    /// The number of distinct clients.
    pub fn clients(&self) -> usize {
        match self {
            Identity::Peer => 1,
            Identity::ForwardedFor { size, .. } => *size as usize,
            Identity::Bearer(tokens) => tokens.len(),
        }
    }

    /// A printable label for client `i` (never a token).
    pub fn label(&self, i: usize) -> String {
        match self {
            Identity::Peer => "peer".into(),
            Identity::ForwardedFor { offset, .. } => {
                pool_address(offset + i as u32).map_or_else(|| "?".into(), |a| a.to_string())
            }
            Identity::Bearer(_) => format!("bearer #{}", i + 1),
        }
    }

    /// A short description for the report's heading.
    pub fn describe(&self) -> String {
        match self {
            Identity::Peer => "1 client (the tool's own address)".into(),
            Identity::ForwardedFor { size, .. } => format!("{size} clients (X-Forwarded-For)"),
            Identity::Bearer(t) => format!("{} client(s) (bearer tokens)", t.len()),
        }
    }
}

/// The number of addresses [`pool_address`] can give.
pub const POOL_CAPACITY: u32 = (1 << 17) + (1 << 24);

/// Address `i` of the X-Forwarded-For pool: first the benchmarking range 198.18.0.0/15
/// (RFC 2544, 131,072 addresses), then 10.0.0.0/8. `None` beyond [`POOL_CAPACITY`].
pub fn pool_address(i: u32) -> Option<Ipv4Addr> {
    const BENCH: u32 = 1 << 17;
    if i < BENCH {
        Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
    } else if i < POOL_CAPACITY {
        Some(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (i - BENCH),
        ))
    } else {
        None
    }
}

/// How many transport errors a run tolerates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorBudget {
    /// At most this many.
    Count(u64),
    /// At most this share of the requests sent (0.01 = 1 %).
    Share(f64),
}

impl ErrorBudget {
    /// Whether `errors` out of `sent` is over the budget.
    pub fn exceeded(self, errors: u64, sent: u64) -> bool {
        match self {
            ErrorBudget::Count(n) => errors > n,
            ErrorBudget::Share(s) => errors as f64 > s * sent as f64,
        }
    }
}

/// The burst to assume per policy name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bursts {
    /// `--burst B`: for every policy without its own.
    pub all: Option<u64>,
    /// `--burst NAME=B`.
    pub by_policy: BTreeMap<String, u64>,
}

impl Bursts {
    /// The burst given for `policy`, if any (else the caller assumes `q`).
    pub fn given(&self, policy: &str) -> Option<u64> {
        self.by_policy.get(policy).copied().or(self.all)
    }
}

/// Everything the command line sets.
#[derive(Clone, Debug)]
pub struct Options {
    /// Base URIs (scheme and authority) of the gateways.
    pub targets: Vec<Uri>,
    /// Requests started per second.
    pub rate: f64,
    /// How long requests are started.
    pub duration: Duration,
    /// Maximum outstanding requests.
    pub max_in_flight: usize,
    /// Path and query of every request.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Tokio worker threads (1: a current-thread runtime).
    pub threads: usize,
    /// Who the requests claim to come from.
    pub identity: Identity,
    /// Bursts for the accounting.
    pub bursts: Bursts,
    /// Tolerance of the false-429 check.
    pub slack: Duration,
    /// Where to write raw counts as JSON.
    pub json: Option<PathBuf>,
    /// Where to write one CSV line per request.
    pub csv: Option<PathBuf>,
    /// Transport errors tolerated.
    pub max_errors: ErrorBudget,
    /// Exit 3 on allowed-beyond-limit or false 429s.
    pub strict: bool,
}

/// What parsing the command line produced.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these options.
    Run(Box<Options>),
    /// `--help` was asked for.
    Help,
}

/// Parses a duration: `250ms`, `10s`, `1.5s`, `2m`, `1h`, `100us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (like 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use us, ms, s, m, h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_target(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("--target '{s}' is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--target '{s}': only http:// URLs are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--target '{s}' has no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "--target '{s}': give the path with --path, not in the target"
        ));
    }
    Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| format!("--target '{s}': {e}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("--header '{s}': expected 'Name: value'"))?;
    let name = HeaderName::from_bytes(k.trim().as_bytes())
        .map_err(|_| format!("--header '{s}': invalid header name"))?;
    let value = HeaderValue::from_str(v.trim())
        .map_err(|_| format!("--header '{s}': invalid header value"))?;
    Ok((name, value))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} '{v}' is not a valid number"))
}

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Parsed, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut targets = Vec::new();
        let mut rate = None;
        let mut duration = Duration::from_secs(10);
        let mut max_in_flight = 256usize;
        let mut path = "/".to_string();
        let mut headers = Vec::new();
        let mut timeout = Duration::from_secs(5);
        let mut threads = 1usize;
        let mut xff_pool = None;
        let mut xff_offset = 0u32;
        let mut bearers = Vec::new();
        let mut bursts = Bursts::default();
        let mut slack = Duration::ZERO;
        let mut json = None;
        let mut csv = None;
        let mut max_errors = ErrorBudget::Share(0.01);
        let mut strict = false;

        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => args.next().ok_or_else(|| format!("{flag} needs a value")),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--target" => targets.push(parse_target(&value()?)?),
                "--rate" => rate = Some(parse_num::<f64>("--rate", &value()?)?),
                "--duration" => duration = parse_duration(&value()?)?,
                "--max-in-flight" => max_in_flight = parse_num("--max-in-flight", &value()?)?,
                "--path" => path = value()?,
                "--header" => headers.push(parse_header(&value()?)?),
                "--timeout" => timeout = parse_duration(&value()?)?,
                "--threads" => threads = parse_num("--threads", &value()?)?,
                "--xff-pool" => xff_pool = Some(parse_num::<u32>("--xff-pool", &value()?)?),
                "--xff-offset" => xff_offset = parse_num("--xff-offset", &value()?)?,
                "--bearer" => bearers.push(value()?),
                "--burst" => {
                    let v = value()?;
                    match v.rsplit_once('=') {
                        Some((name, b)) => {
                            bursts
                                .by_policy
                                .insert(name.to_string(), parse_num("--burst", b)?);
                        }
                        None => bursts.all = Some(parse_num("--burst", &v)?),
                    }
                }
                "--slack" => slack = parse_duration(&value()?)?,
                "--json" => json = Some(PathBuf::from(value()?)),
                "--csv" => csv = Some(PathBuf::from(value()?)),
                "--max-errors" => {
                    let v = value()?;
                    max_errors = match v.strip_suffix('%') {
                        Some(p) => ErrorBudget::Share(parse_num::<f64>("--max-errors", p)? / 100.0),
                        None => ErrorBudget::Count(parse_num("--max-errors", &v)?),
                    };
                }
                "--strict" => strict = true,
                other => return Err(format!("unknown argument '{other}'")),
            }
        }

        if targets.is_empty() {
            return Err("at least one --target is required".into());
        }
        let rate = rate.ok_or("--rate is required")?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--rate must be above 0".into());
        }
        if duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        if max_in_flight == 0 || threads == 0 {
            return Err("--max-in-flight and --threads must be at least 1".into());
        }
        if !path.starts_with('/') {
            return Err(format!("--path '{path}' must start with /"));
        }
        let identity = match (xff_pool, bearers.is_empty()) {
            (Some(_), false) => return Err("--xff-pool and --bearer exclude each other".into()),
            (Some(0), _) => return Err("--xff-pool must be at least 1".into()),
            (Some(size), true) => {
                if u64::from(xff_offset) + u64::from(size) > u64::from(POOL_CAPACITY) {
                    return Err(format!(
                        "--xff-offset + --xff-pool must stay within {POOL_CAPACITY} addresses"
                    ));
                }
                Identity::ForwardedFor {
                    size,
                    offset: xff_offset,
                }
            }
            (None, false) => {
                for t in &bearers {
                    if HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                        return Err("a --bearer token holds characters a header cannot".into());
                    }
                }
                Identity::Bearer(bearers)
            }
            (None, true) => Identity::Peer,
        };
        Ok(Parsed::Run(Box::new(Options {
            targets,
            rate,
            duration,
            max_in_flight,
            path,
            headers,
            timeout,
            threads,
            identity,
            bursts,
            slack,
            json,
            csv,
            max_errors,
            strict,
        })))
    }

    /// The request URI for target `i`.
    pub fn request_uri(&self, i: usize) -> Result<Uri, String> {
        let base = &self.targets[i];
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        format!("http://{authority}{}", self.path)
            .parse()
            .map_err(|e| format!("--path '{}': {e}", self.path))
    }
}

/// Which client and which target request number `i` uses.
///
/// Clients go round-robin (`i mod clients`). Targets rotate so that consecutive requests go
/// to different targets *and* each client's successive requests go to different targets:
/// without the shift, 2 targets and an even number of clients would pin every client to one
/// target, and a test of state shared between instances would test nothing.
pub fn assign(i: u64, clients: usize, targets: usize) -> (usize, usize) {
    let clients = clients as u64;
    let client = i % clients;
    let round = i / clients;
    (
        client as usize,
        ((round + client) % targets as u64) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        match Options::parse(args.iter().copied())? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn a_full_command_line() {
        let o = parse(&[
            "--target",
            "http://127.0.0.1:8080",
            "--target=http://127.0.0.1:8081/",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--header",
            "X-Test: 1",
            "--xff-pool",
            "50",
            "--burst",
            "anonymous=20",
            "--burst",
            "5",
            "--max-errors",
            "2%",
        ])
        .unwrap();
        assert_eq!(o.targets.len(), 2);
        assert_eq!(
            o.request_uri(1).unwrap().to_string(),
            "http://127.0.0.1:8081/"
        );
        assert_eq!(o.rate, 200.0);
        assert_eq!(o.identity.clients(), 50);
        assert_eq!(o.identity.label(0), "198.18.0.0");
        assert_eq!(o.bursts.given("anonymous"), Some(20));
        assert_eq!(o.bursts.given("user"), Some(5));
        assert_eq!(o.max_errors, ErrorBudget::Share(0.02));
        assert_eq!(o.headers[0].0, "x-test");
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["--rate", "1"]).unwrap_err().contains("--target"));
        assert!(
            parse(&["--target", "http://h:1"])
                .unwrap_err()
                .contains("--rate")
        );
        assert!(
            parse(&["--target", "http://h:1/x", "--rate", "1"])
                .unwrap_err()
                .contains("--path")
        );
        assert!(
            parse(&[
                "--target",
                "http://h:1",
                "--rate",
                "1",
                "--xff-pool",
                "2",
                "--bearer",
                "t"
            ])
            .unwrap_err()
            .contains("exclude")
        );
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown"));
    }

    #[test]
    fn pool_addresses() {
        assert_eq!(pool_address(1), Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(
            pool_address((1 << 17) - 1),
            Some(Ipv4Addr::new(198, 19, 255, 255))
        );
        assert_eq!(pool_address(1 << 17), Some(Ipv4Addr::new(10, 0, 0, 0)));
        assert_eq!(pool_address(POOL_CAPACITY), None);
    }

    #[test]
    fn every_client_rotates_over_the_targets() {
        // 100 clients, 2 targets: client 0 must see both targets.
        let seen: Vec<usize> = (0..400u64)
            .filter_map(|i| {
                let (c, t) = assign(i, 100, 2);
                (c == 0).then_some(t)
            })
            .collect();
        assert_eq!(seen, vec![0, 1, 0, 1]);
        // one client: plain round-robin
        let t: Vec<usize> = (0..4u64).map(|i| assign(i, 1, 2).1).collect();
        assert_eq!(t, vec![0, 1, 0, 1]);
        // balanced overall
        let to_0 = (0..1000u64).filter(|&i| assign(i, 3, 2).1 == 0).count();
        assert_eq!(to_0, 500);
    }

    #[test]
    fn error_budget() {
        assert!(!ErrorBudget::Share(0.01).exceeded(1, 100));
        assert!(ErrorBudget::Share(0.01).exceeded(2, 100));
        assert!(ErrorBudget::Count(0).exceeded(1, 1_000_000));
    }
}
