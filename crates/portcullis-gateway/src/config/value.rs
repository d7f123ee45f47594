//! Parsing one raw value (from the file, an environment variable or a flag) into the
//! narrowest type its key allows.
//!
//! Each parser returns what was expected on failure; the loader adds the key, the value
//! (unless secret) and where it came from.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeValue;

/// A value as it arrived: typed TOML from the file or a default, or text from the
/// environment or a flag.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Raw<'a> {
    Toml(&'a DeValue<'a>),
    Text(&'a str),
}

impl Raw<'_> {
    /// The value as the user wrote it, for messages.
    pub(crate) fn display(&self) -> String {
        match self {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(v) => toml_display(v),
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Raw::Text(s) => Some(s),
            Raw::Toml(DeValue::String(s)) => Some(s),
            Raw::Toml(_) => None,
        }
    }
}

fn toml_display(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{:?}", s.as_ref()),
        DeValue::Integer(i) => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(a) => {
            let items: Vec<String> = a.iter().map(|i| toml_display(i.get_ref())).collect();
            format!("[{}]", items.join(", "))
        }
        DeValue::Table(_) => "a table".to_owned(),
    }
}

pub(crate) type Parsed<T> = Result<T, String>;

pub(crate) fn boolean(raw: Raw<'_>) -> Parsed<bool> {
    const WANT: &str = "expected true or false";
    match raw {
        Raw::Toml(DeValue::Boolean(b)) => Ok(*b),
        Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(WANT.into()),
        },
        Raw::Toml(_) => Err(WANT.into()),
    }
}

pub(crate) fn integer(raw: Raw<'_>, min: i64, max: i64) -> Parsed<i64> {
    let want = || format!("expected an integer from {min} to {max}");
    let n = match raw {
        Raw::Toml(DeValue::Integer(i)) => {
            let digits = i.as_str().replace('_', "");
            let (neg, digits) = match digits.strip_prefix('-') {
                Some(d) => (true, d.to_owned()),
                None => (false, digits.trim_start_matches('+').to_owned()),
            };
            let v = i64::from_str_radix(&digits, i.radix()).map_err(|_| want())?;
            if neg { -v } else { v }
        }
        Raw::Text(s) => s.trim().parse::<i64>().map_err(|_| want())?,
        Raw::Toml(_) => return Err(want()),
    };
    if n < min || n > max {
        return Err(want());
    }
    Ok(n)
}

pub(crate) fn float(raw: Raw<'_>, min: f64, max: f64) -> Parsed<f64> {
    let want = || format!("expected a number from {min} to {max}");
    let n = match raw {
        Raw::Toml(DeValue::Float(f)) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .map_err(|_| want())?,
        Raw::Toml(DeValue::Integer(_)) => {
            integer(raw, i64::MIN, i64::MAX).map_err(|_| want())? as f64
        }
        Raw::Text(s) => s.trim().parse::<f64>().map_err(|_| want())?,
        Raw::Toml(_) => return Err(want()),
    };
    if !n.is_finite() || n < min || n > max {
        return Err(want());
    }
    Ok(n)
}

/// Parses `"250ms"`, `"10s"`, `"15m"`, `"2h"`, `"7d"` and sums such as `"1h30m"`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86_400.0,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
    }
    Some(total)
}

pub(crate) fn duration(raw: Raw<'_>, min: Duration, max: Duration) -> Parsed<Duration> {
    let want = || {
        format!(
            "expected a duration such as \"250ms\", \"10s\", \"15m\" or \"1h30m\", from {} to {}",
            fmt_duration(min),
            fmt_duration(max)
        )
    };
    let d = raw.as_text().and_then(parse_duration).ok_or_else(want)?;
    if d < min || d > max {
        return Err(want());
    }
    Ok(d)
}

/// Parses `"16KiB"`, `"1MiB"`, `"500KB"`, `"1024"` (bytes).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let number: f64 = s[..num_len].parse().ok()?;
    let mult: u64 = match s[num_len..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = number * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 && bytes.fract() == 0.0)
        .then_some(bytes as u64)
}

pub(crate) fn size(raw: Raw<'_>, min: u64, max: u64) -> Parsed<u64> {
    let want = || {
        format!(
            "expected a size such as \"16KiB\" or \"1MiB\", from {} to {}",
            fmt_size(min),
            fmt_size(max)
        )
    };
    let n = match raw {
        Raw::Toml(DeValue::Integer(_)) => {
            u64::try_from(integer(raw, 0, i64::MAX).map_err(|_| want())?).map_err(|_| want())?
        }
        _ => raw.as_text().and_then(parse_size).ok_or_else(want)?,
    };
    if n < min || n > max {
        return Err(want());
    }
    Ok(n)
}

pub(crate) fn addr(raw: Raw<'_>) -> Parsed<SocketAddr> {
    let want = "expected an address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"";
    raw.as_text()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| want.into())
}

pub(crate) fn text(raw: Raw<'_>) -> Parsed<String> {
    raw.as_text()
        .map(str::to_owned)
        .ok_or_else(|| "expected a string".into())
}

pub(crate) fn choice(raw: Raw<'_>, choices: &'static [&'static str]) -> Parsed<&'static str> {
    let want = || {
        let list: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        format!("expected one of {}", list.join(", "))
    };
    let s = raw.as_text().ok_or_else(want)?;
    choices
        .iter()
        .copied()
        .find(|c| *c == s.trim())
        .ok_or_else(want)
}

pub(crate) fn list(raw: Raw<'_>) -> Parsed<Vec<String>> {
    const WANT: &str =
        "expected a list of strings, e.g. [\"a\", \"b\"] (from the environment: a,b)";
    match raw {
        Raw::Text(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Raw::Toml(DeValue::Array(a)) => a
            .iter()
            .map(|v| match v.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                _ => Err(WANT.to_owned()),
            })
            .collect(),
        Raw::Toml(_) => Err(WANT.into()),
    }
}

pub(crate) fn cidrs(raw: Raw<'_>) -> Parsed<Vec<IpNet>> {
    let items = list(raw)?;
    let mut nets = Vec::with_capacity(items.len());
    for item in items {
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match item.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "expected networks such as \"10.0.0.0/8\" or \"2001:db8::/32\"; {item:?} is not one"
                    ));
                }
            },
        };
        if net.prefix_len() == 0 {
            return Err(format!(
                "{item:?} trusts every address, so any client could forge its address; list your proxies' networks instead"
            ));
        }
        nets.push(net.trunc());
    }
    Ok(nets)
}

pub(crate) fn methods(raw: Raw<'_>) -> Parsed<Vec<String>> {
    let items = list(raw)?;
    if items.is_empty() {
        return Err("expected at least one method, or [\"*\"] for all".into());
    }
    for m in &items {
        let ok = m == "*" || (!m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()));
        if !ok {
            return Err(format!(
                "expected methods in upper case such as \"GET\" or \"POST\", or \"*\"; {m:?} is not one"
            ));
        }
    }
    Ok(items)
}

/// Checks a `redis://` or `rediss://` URL: `[user][:password]@host[:port][/db][?params]`.
/// Messages never quote the URL: it may hold a password.
/// A web origin, `scheme://host[:port]`, normalised: lower case, default ports dropped.
pub(crate) fn origin(s: &str) -> Result<String, String> {
    let want = "expected an origin such as \"https://app.example\" or \"http://localhost:8080\" (scheme, host and port only)";
    let uri: http::Uri = s.trim().parse().map_err(|_| want.to_owned())?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    let (Some(scheme), Some(authority)) = (scheme, uri.authority()) else {
        return Err(want.into());
    };
    if !matches!(scheme.as_str(), "http" | "https")
        || authority.as_str().contains('@')
        || authority.host().is_empty()
        || uri.path_and_query().is_some_and(|pq| pq.as_str() != "/")
        || s.trim().ends_with('/')
    {
        return Err(want.into());
    }
    let host = authority.host().to_ascii_lowercase();
    let default = if scheme == "https" { 443 } else { 80 };
    Ok(match authority.port_u16() {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

pub(crate) fn redis_url(s: &str) -> Result<(), String> {
    let want =
        "expected a URL such as \"redis://127.0.0.1:6379/0\" or \"rediss://:password@host:6380\"";
    let rest = s
        .strip_prefix("redis://")
        .or_else(|| s.strip_prefix("rediss://"))
        .ok_or_else(|| format!("{want} (the scheme must be redis or rediss)"))?;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, db) = hostpart
        .split_once('/')
        .map_or((hostpart, ""), |(h, d)| (h, d));
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!("{want}; the database after '/' must be a number"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(|| want.to_owned())?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{want}; the host is missing"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{want}; the port must be a number from 1 to 65535"));
    }
    Ok(())
}

/// A duration as the reference and messages print it.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A size as the reference and messages print it.
pub(crate) fn fmt_size(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// Hides the user-info part of anything that looks like a URL, so that a password in
/// a URL never reaches a message.
pub(crate) fn mask_userinfo(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[redacted]@{}", &s[..scheme_end], &s[at + 1..])
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "10", "-5s", "5 s", "5x", "s", "1h-5m"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB"), Some(16 * 1024));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("500KB"), Some(500_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("0.5KiB"), Some(512));
        for bad in ["", "lots", "-1KiB", "1 parsec", "0.3B"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(fmt_size(16 * 1024), "16KiB");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn redis_urls() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://h",
            "rediss://:pw@h:6380/2",
            "redis://u:p@[::1]:7000/0?protocol=resp3",
        ] {
            assert_eq!(redis_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://h",
            "redis://",
            "redis://:pw@",
            "redis://h:port",
            "redis://h:0",
            "redis://h/db",
        ] {
            let e = redis_url(bad).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(
            mask_userinfo("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://[redacted]@10.0.0.1:6379/0"
        );
        assert_eq!(mask_userinfo("http://x"), "http://x");
    }
}
