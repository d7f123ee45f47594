//! Parsing the rate-limit response headers of draft-ietf-httpapi-ratelimit-headers-10.
//!
//! Both fields are Structured Field Lists (RFC 9651) of Items whose value names the policy:
//!
//! ```text
//! RateLimit-Policy: "anonymous";q=60;w=60
//! RateLimit: "anonymous";r=17;t=3
//! ```
//!
//! The parser is deliberately small and lenient: it understands strings, tokens and integer
//! parameters, ignores parameters it does not know (`qu`, `pk`, decimals, …) and returns
//! `None` for a member it cannot read, rather than failing the whole run.

/// One member of `RateLimit-Policy`: a policy's name, quota and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyItem {
    /// The policy's name (the Item's value).
    pub name: String,
    /// `q`: the quota, in requests.
    pub quota: Option<u64>,
    /// `w`: the window, in seconds.
    pub window: Option<u64>,
}

/// One member of `RateLimit`: the current state of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitItem {
    /// The policy's name (the Item's value).
    pub name: String,
    /// `r`: the remaining quota.
    pub remaining: Option<i64>,
    /// `t`: seconds until the quota resets.
    pub reset: Option<i64>,
}

/// Parses a `RateLimit-Policy` value into its members, in order.
pub fn parse_policy(value: &str) -> Vec<PolicyItem> {
    parse_list(value)
        .into_iter()
        .map(|(name, params)| PolicyItem {
            quota: int_param(&params, "q").and_then(|v| u64::try_from(v).ok()),
            window: int_param(&params, "w").and_then(|v| u64::try_from(v).ok()),
            name,
        })
        .collect()
}

/// Parses a `RateLimit` value into its members, in order.
pub fn parse_limit(value: &str) -> Vec<LimitItem> {
    parse_list(value)
        .into_iter()
        .map(|(name, params)| LimitItem {
            remaining: int_param(&params, "r"),
            reset: int_param(&params, "t"),
            name,
        })
        .collect()
}

/// A parameter's raw value: an integer, or anything else (kept as text).
type Params = Vec<(String, Option<i64>)>;

fn int_param(params: &Params, key: &str) -> Option<i64> {
    params.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v)
}

/// Splits a Structured Field List into `(item value, parameters)` pairs. Members that do not
/// parse are skipped.
fn parse_list(value: &str) -> Vec<(String, Params)> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let (member, after) = split_member(rest);
        if let Some(parsed) = parse_member(member) {
            out.push(parsed);
        }
        match after {
            Some(after) => rest = after,
            None => break,
        }
    }
    out
}

/// Splits off the first member at a comma outside a quoted string.
fn split_member(s: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
    }
    (s, None)
}

/// Parses `"name";k=v;k2=v2` (or a bare token instead of the string).
fn parse_member(member: &str) -> Option<(String, Params)> {
    let member = member.trim();
    let (name, mut rest) = if let Some(body) = member.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => name.push(chars.next()?.1),
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => name.push(c),
            }
        }
        (name, &body[end?..])
    } else {
        let end = member.find(';').unwrap_or(member.len());
        let token = member[..end].trim();
        if token.is_empty() {
            return None;
        }
        (token.to_string(), &member[end..])
    };
    let mut params = Vec::new();
    while let Some(after) = rest.trim_start().strip_prefix(';') {
        let end = after.find(';').unwrap_or(after.len());
        let param = after[..end].trim();
        rest = &after[end..];
        if param.is_empty() {
            continue;
        }
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim().parse::<i64>().ok()),
            None => (param, Some(1)), // a bare key is boolean true
        };
        params.push((key.to_ascii_lowercase(), value));
    }
    Some((name, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_of_the_draft() {
        assert_eq!(
            parse_policy(r#""anonymous";q=60;w=60"#),
            vec![PolicyItem {
                name: "anonymous".into(),
                quota: Some(60),
                window: Some(60)
            }]
        );
    }

    #[test]
    fn several_members_tokens_and_unknown_params() {
        let got =
            parse_policy(r#""burst";q=100;w=60;qu="requests", daily;pk=:YWJj:;q=1000;w=86400"#);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "burst");
        assert_eq!((got[0].quota, got[0].window), (Some(100), Some(60)));
        assert_eq!(got[1].name, "daily");
        assert_eq!((got[1].quota, got[1].window), (Some(1000), Some(86400)));
    }

    #[test]
    fn quoted_comma_and_escapes_in_a_name() {
        let got = parse_limit(r#""a,\"b\"";r=0;t=12"#);
        assert_eq!(
            got,
            vec![LimitItem {
                name: r#"a,"b""#.into(),
                remaining: Some(0),
                reset: Some(12)
            }]
        );
    }

    #[test]
    fn garbage_gives_nothing_or_no_params() {
        assert!(parse_policy("").is_empty());
        assert!(parse_policy(r#""unterminated;q=1"#).is_empty());
        let got = parse_limit(r#""x";r=abc"#);
        assert_eq!(got[0].remaining, None);
    }
}
