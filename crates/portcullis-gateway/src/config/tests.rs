use std::collections::BTreeMap;
use std::io::Write;

use super::*;

fn sources(
    file: Option<&str>,
    env: &[(&str, &str)],
    flags: &[(&'static str, &'static str, &str)],
) -> (Sources, Option<tempfile_lite::TempFile>) {
    let tmp = file.map(tempfile_lite::TempFile::with);
    let s = Sources {
        file: tmp.as_ref().map(|t| t.path.clone()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        flags: flags
            .iter()
            .map(|(key, flag, value)| Flag {
                key,
                flag,
                value: value.to_string(),
            })
            .collect(),
    };
    (s, tmp)
}

/// A file in the temp dir, removed on drop: enough for these tests without a crate.
mod tempfile_lite {
    use super::*;
    pub(super) struct TempFile {
        pub(super) path: PathBuf,
    }
    impl TempFile {
        pub(super) fn with(text: &str) -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir()
                .join(format!("portcullis-cfg-{}-{n}.toml", std::process::id()));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            Self { path }
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[test]
fn defaults_load_and_every_key_is_read() {
    let (s, _t) = sources(None, &[], &[]);
    let cfg = Config::load(&s).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cfg.limits.body, 1 << 20);
    assert_eq!(cfg.limits.request_timeout, Duration::from_secs(30));
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert!(cfg.upstream.is_none());

    // Every declared key is read by `read`, so none is documented but ignored.
    let env = BTreeMap::new();
    let mut l = Loader::new(None, &env, &[]);
    let _ = read(&mut l);
    for d in keys::KEYS {
        assert!(
            l.read.contains(d.key),
            "{} is declared but never read",
            d.key
        );
    }
}

#[test]
fn precedence_default_file_env_flag() {
    let file =
        "listen = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:2001\"\nshutdown_grace = \"3s\"\n";
    let (s, _t) = sources(
        Some(file),
        &[
            ("PORTCULLIS_ADMIN_LISTEN", "127.0.0.1:2002"),
            ("PORTCULLIS_LISTEN", "127.0.0.1:1002"),
        ],
        &[("listen", "--listen", "127.0.0.1:1003")],
    );
    let cfg = Config::load(&s).unwrap();
    assert_eq!(cfg.listen.port(), 1003, "flag beats env");
    assert_eq!(cfg.admin_listen.port(), 2002, "env beats file");
    assert_eq!(
        cfg.shutdown_grace,
        Duration::from_secs(3),
        "file beats default"
    );
    assert_eq!(cfg.limits.header_count, 100, "default");
}

#[test]
fn routes_parse() {
    let file = r#"
[[routes]]
name = "admin"
path = "/admin/**"
methods = ["GET", "POST"]

[[routes]]
path = "/api/*"
"#;
    let (s, _t) = sources(Some(file), &[], &[]);
    let cfg = Config::load(&s).unwrap();
    assert_eq!(cfg.routes.len(), 2);
    assert_eq!(&*cfg.routes[0].name, "admin");
    assert_eq!(cfg.routes[0].methods.as_ref().unwrap().len(), 2);
    assert_eq!(&*cfg.routes[1].name, "route-1");
    assert!(cfg.routes[1].methods.is_none());
}

struct Case {
    name: &'static str,
    file: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
    flags: &'static [(&'static str, &'static str, &'static str)],
    /// Every one of these must appear in one error line.
    want: &'static [&'static str],
    /// None of these may appear anywhere in the output.
    never: &'static [&'static str],
}

#[test]
fn config_error_table() {
    let cases = [
        Case {
            name: "route cache ttl out of range",
            file: Some(
                "[[routes]]\nname = \"p\"\npath = \"/p\"\ncache = { ttl = \"0s\", tags = [\"a\"] }\n",
            ),
            env: &[],
            flags: &[],
            want: &["routes[0].cache.ttl", "line 4"],
            never: &[],
        },
        Case {
            name: "route cache unknown key",
            file: Some("[[routes]]\nname = \"p\"\npath = \"/p\"\ncache = { tll = \"30s\" }\n"),
            env: &[],
            flags: &[],
            want: &[
                "routes[0].cache.tll",
                "unknown key",
                "did you mean cache.ttl",
            ],
            never: &[],
        },
        Case {
            name: "route cache as an empty table",
            file: Some("[[routes]]\nname = \"p\"\npath = \"/p\"\ncache = {}\n"),
            env: &[],
            flags: &[],
            want: &[
                "routes[0].cache",
                "empty table",
                "ttl, tags, per_subject",
                "line 4",
            ],
            never: &[],
        },
        Case {
            name: "cache memory below its minimum",
            file: None,
            env: &[("PORTCULLIS_CACHE_MAX_MEMORY", "1KiB")],
            flags: &[],
            want: &["cache.max_memory", "PORTCULLIS_CACHE_MAX_MEMORY"],
            never: &[],
        },
        Case {
            name: "unknown top-level key",
            file: Some("listne = \"127.0.0.1:1\"\n"),
            env: &[],
            flags: &[],
            want: &["listne", "unknown key", "did you mean listen", "line 1"],
            never: &[],
        },
        Case {
            name: "unknown nested key",
            file: Some("[limits]\nbody = \"1MiB\"\nbdy = 3\n"),
            env: &[],
            flags: &[],
            want: &["limits.bdy", "unknown key", "line 3"],
            never: &[],
        },
        Case {
            name: "unknown section",
            file: Some("[limitz]\nbody = 1\n"),
            env: &[],
            flags: &[],
            want: &["limitz", "unknown key", "did you mean"],
            never: &[],
        },
        Case {
            name: "unknown env var",
            file: None,
            env: &[("PORTCULLIS_LIMITS_BDOY", "1MiB")],
            flags: &[],
            want: &[
                "PORTCULLIS_LIMITS_BDOY",
                "unknown environment variable",
                "PORTCULLIS_LIMITS_BODY",
            ],
            never: &[],
        },
        Case {
            name: "wrong type in file",
            file: Some("[limits]\nheader_count = \"many\"\n"),
            env: &[],
            flags: &[],
            want: &[
                "limits.header_count",
                "expected an integer",
                "\"many\"",
                "line 2",
            ],
            never: &[],
        },
        Case {
            name: "bool where int",
            file: Some("instances = true\n"),
            env: &[],
            flags: &[],
            want: &["instances", "expected an integer", "line 1"],
            never: &[],
        },
        Case {
            name: "bad duration",
            file: Some("shutdown_grace = \"10 seconds\"\n"),
            env: &[],
            flags: &[],
            want: &["shutdown_grace", "expected a duration", "\"10 seconds\""],
            never: &[],
        },
        Case {
            name: "negative duration",
            file: Some("[limits]\nrequest_timeout = \"-5s\"\n"),
            env: &[],
            flags: &[],
            want: &["limits.request_timeout", "expected a duration"],
            never: &[],
        },
        Case {
            name: "zero request timeout",
            file: Some("[limits]\nrequest_timeout = \"0s\"\n"),
            env: &[],
            flags: &[],
            want: &["limits.request_timeout", "from 1ms"],
            never: &[],
        },
        Case {
            name: "duration as integer",
            file: Some("shutdown_grace = 10\n"),
            env: &[],
            flags: &[],
            want: &["shutdown_grace", "expected a duration"],
            never: &[],
        },
        Case {
            name: "bad address",
            file: Some("listen = \"localhost\"\n"),
            env: &[],
            flags: &[],
            want: &["listen", "expected an address and port", "\"localhost\""],
            never: &[],
        },
        Case {
            name: "bad address from flag",
            file: None,
            env: &[],
            flags: &[("admin_listen", "--admin-listen", "127.0.0.1:99999")],
            want: &["admin_listen", "--admin-listen"],
            never: &[],
        },
        Case {
            name: "bad env var value",
            file: None,
            env: &[("PORTCULLIS_LIMITS_HEADER_COUNT", "lots")],
            flags: &[],
            want: &[
                "limits.header_count",
                "PORTCULLIS_LIMITS_HEADER_COUNT",
                "expected an integer",
            ],
            never: &[],
        },
        Case {
            name: "zero size",
            file: Some("[limits]\nbody = \"0KiB\"\n"),
            env: &[],
            flags: &[],
            want: &["limits.body", "from 1B"],
            never: &[],
        },
        Case {
            name: "zero count",
            file: Some("[limits]\nheader_count = 0\n"),
            env: &[],
            flags: &[],
            want: &["limits.header_count", "from 1"],
            never: &[],
        },
        Case {
            name: "size unit unknown",
            file: Some("[limits]\nuri_bytes = \"8 parsecs\"\n"),
            env: &[],
            flags: &[],
            want: &["limits.uri_bytes", "expected a size"],
            never: &[],
        },
        Case {
            name: "trusted proxies /0",
            file: Some("trusted_proxies = [\"0.0.0.0/0\"]\n"),
            env: &[],
            flags: &[],
            want: &["trusted_proxies", "trusts every address"],
            never: &[],
        },
        Case {
            name: "trusted proxies v6 /0 from env",
            file: None,
            env: &[("PORTCULLIS_TRUSTED_PROXIES", "10.0.0.0/8,::/0")],
            flags: &[],
            want: &[
                "trusted_proxies",
                "PORTCULLIS_TRUSTED_PROXIES",
                "trusts every address",
            ],
            never: &[],
        },
        Case {
            name: "trusted proxies garbage",
            file: Some("trusted_proxies = [\"10.0.0.0/33\"]\n"),
            env: &[],
            flags: &[],
            want: &["trusted_proxies", "expected networks"],
            never: &[],
        },
        Case {
            name: "enum",
            file: Some("[log]\nformat = \"xml\"\n"),
            env: &[],
            flags: &[],
            want: &["log.format", "expected one of \"json\", \"pretty\""],
            never: &[],
        },
        Case {
            name: "log level",
            file: Some("[log]\nlevel = \"loud\"\n"),
            env: &[],
            flags: &[],
            want: &["log.level", "expected error, warn"],
            never: &[],
        },
        Case {
            name: "secret in upstream URL never echoed",
            file: Some("upstream = \"http://admin:hunter2@10.0.0.1:3000\"\n"),
            env: &[],
            flags: &[],
            want: &["upstream", "without user info"],
            never: &["hunter2"],
        },
        Case {
            name: "secret in env URL never echoed",
            file: None,
            env: &[("PORTCULLIS_UPSTREAM", "ftp://u:s3cr3t@x")],
            flags: &[],
            want: &["upstream", "PORTCULLIS_UPSTREAM"],
            never: &["s3cr3t"],
        },
        Case {
            name: "upstream scheme",
            file: Some("upstream = \"ftp://10.0.0.1\"\n"),
            env: &[],
            flags: &[],
            want: &["upstream", "http:// or https://"],
            never: &[],
        },
        Case {
            name: "tls half configured",
            file: Some("[tls]\ncert_file = \"/x.pem\"\n"),
            env: &[],
            flags: &[],
            want: &["tls.key_file", "required when tls.cert_file"],
            never: &[],
        },
        Case {
            name: "route without path",
            file: Some("[[routes]]\nname = \"x\"\n"),
            env: &[],
            flags: &[],
            want: &["routes[0].path", "required"],
            never: &[],
        },
        Case {
            name: "route unknown key",
            file: Some("[[routes]]\npath = \"/a\"\nrolez = [\"admin\"]\n"),
            env: &[],
            flags: &[],
            want: &["routes[0].rolez", "unknown key", "line 3"],
            never: &[],
        },
        Case {
            name: "route bad glob",
            file: Some("[[routes]]\npath = \"admin/**\"\n"),
            env: &[],
            flags: &[],
            want: &["routes[0].path", "starts with '/'"],
            never: &[],
        },
        Case {
            name: "route bad method",
            file: Some("[[routes]]\npath = \"/a\"\nmethods = [\"get\"]\n"),
            env: &[],
            flags: &[],
            want: &["routes[0].methods", "upper case"],
            never: &[],
        },
        Case {
            name: "duplicate route names",
            file: Some(
                "[[routes]]\nname = \"a\"\npath = \"/a\"\n[[routes]]\nname = \"a\"\npath = \"/b\"\n",
            ),
            env: &[],
            flags: &[],
            want: &["routes[1].name", "already named"],
            never: &[],
        },
        Case {
            name: "routes not an array",
            file: Some("routes = 5\n"),
            env: &[],
            flags: &[],
            want: &["routes", "array of tables"],
            never: &[],
        },
        Case {
            name: "section not a table",
            file: Some("limits = 5\n"),
            env: &[],
            flags: &[],
            want: &["limits", "expected a table"],
            never: &[],
        },
        Case {
            name: "syntax error",
            file: Some("listen = \n"),
            env: &[],
            flags: &[],
            want: &["config file", "not valid TOML", "line 1"],
            never: &[],
        },
        Case {
            name: "same address twice",
            file: Some("listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n"),
            env: &[],
            flags: &[],
            want: &["admin_listen", "must differ"],
            never: &[],
        },
        Case {
            name: "tier without a limit",
            file: Some("[rate_limit.tiers]\npartner = { per = \"1m\" }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.tiers.partner.limit", "required"],
            never: &[],
        },
        Case {
            name: "tier quota of zero",
            file: Some("[rate_limit.tiers]\nuser = { limit = 0 }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.tiers.user.limit", "from 1"],
            never: &[],
        },
        Case {
            name: "tier with an unknown field",
            file: Some("[rate_limit.tiers]\nuser = { limit = 5, window = \"1m\" }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.tiers.user.window"],
            never: &[],
        },
        Case {
            name: "tier that is not a role name",
            file: Some("[rate_limit.tiers]\nPower-Users = { limit = 5 }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.tiers.Power-Users", "not a role name"],
            never: &[],
        },
        Case {
            name: "tier window of zero",
            file: Some("[rate_limit.tiers]\nuser = { limit = 5, per = \"0s\" }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.tiers.user.per", "from 1ms"],
            never: &[],
        },
        Case {
            name: "route burst without a limit",
            file: Some("[[routes]]\nname = \"a\"\npath = \"/a\"\nrate_limit = { burst = 5 }\n"),
            env: &[],
            flags: &[],
            want: &["routes[0]", "rate_limit.limit", "required"],
            never: &[],
        },
        Case {
            name: "route quota of zero",
            file: Some("[[routes]]\nname = \"a\"\npath = \"/a\"\nrate_limit = { limit = 0 }\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.limit", "from 1"],
            never: &[],
        },
        Case {
            name: "unknown rate-limit key kind",
            file: Some(
                "[[routes]]\nname = \"a\"\npath = \"/a\"\nrate_limit = { limit = 5, key = \"user\" }\n",
            ),
            env: &[],
            flags: &[],
            want: &["rate_limit.key", "subject", "subject_or_ip"],
            never: &[],
        },
        Case {
            name: "unknown counting",
            file: Some("[[routes]]\nname = \"a\"\npath = \"/a\"\ncount = \"errors\"\n"),
            env: &[],
            flags: &[],
            want: &["count", "failures"],
            never: &[],
        },
        Case {
            name: "ipv6 prefix out of range",
            file: None,
            env: &[("PORTCULLIS_RATE_LIMIT_IPV6_PREFIX", "16")],
            flags: &[],
            want: &[
                "rate_limit.ipv6_prefix",
                "PORTCULLIS_RATE_LIMIT_IPV6_PREFIX",
                "32",
            ],
            never: &[],
        },
        Case {
            name: "unknown algorithm",
            file: Some("[rate_limit]\nalgorithm = \"leaky_bucket\"\n"),
            env: &[],
            flags: &[],
            want: &["rate_limit.algorithm", "gcra", "sliding_window"],
            never: &[],
        },
    ];
    assert!(cases.len() >= 15);
    for c in &cases {
        let (s, _t) = sources(c.file, c.env, c.flags);
        let err = match Config::load(&s) {
            Ok(_) => panic!("{}: loaded without error", c.name),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(
            text.lines()
                .any(|line| c.want.iter().all(|w| line.contains(w))),
            "{}: no line has all of {:?}:\n{text}",
            c.name,
            c.want
        );
        for n in c.never {
            assert!(!text.contains(n), "{}: output shows {n:?}:\n{text}", c.name);
        }
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let file = "listen = \"nope\"\nbogus = 1\n[limits]\nbody = \"-1\"\n";
    let (s, _t) = sources(
        Some(file),
        &[("PORTCULLIS_NOPE", "1"), ("PORTCULLIS_INSTANCES", "0")],
        &[],
    );
    let err = Config::load(&s).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "listen",
        "bogus",
        "limits.body",
        "PORTCULLIS_NOPE",
        "instances",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn missing_config_file_is_an_error_naming_its_source() {
    let s = Sources {
        file: None,
        env: [(
            "PORTCULLIS_CONFIG".to_string(),
            "/nonexistent/p.toml".to_string(),
        )]
        .into(),
        flags: vec![],
    };
    let err = Config::load(&s).unwrap_err().to_string();
    assert!(
        err.contains("PORTCULLIS_CONFIG") && err.contains("/nonexistent/p.toml"),
        "{err}"
    );
}

#[test]
fn tiers_merge_with_the_defaults_and_routes_get_their_own_quota() {
    let file = r#"
[rate_limit.tiers]
anonymous = { limit = 10, per = "1h" }
partner = { limit = 3000, per = "1m", burst = 100 }

[[routes]]
name = "login"
path = "/auth/login"
rate_limit = { limit = 5, per = "15m", key = "ip" }
count = "failures"
on_redis_down = "deny"
"#;
    let (s, _t) = sources(Some(file), &[], &[]);
    let cfg = Config::load(&s).unwrap();
    let tiers: BTreeMap<&str, (u32, Duration, u32)> = cfg
        .rate_limit
        .tiers
        .iter()
        .map(|t| {
            (
                t.role.as_str(),
                (t.quota.limit.get(), t.quota.per, t.quota.burst.get()),
            )
        })
        .collect();
    assert_eq!(
        tiers["anonymous"],
        (10, Duration::from_secs(3600), 10),
        "the file replaces a default"
    );
    assert_eq!(
        tiers["user"],
        (600, Duration::from_secs(60), 600),
        "the others stay"
    );
    assert_eq!(tiers["partner"], (3000, Duration::from_secs(60), 100));
    let login = &cfg.routes[0];
    let own = login.rate_limit.as_ref().unwrap();
    assert_eq!(
        (own.quota.limit.get(), own.quota.per, own.key),
        (5, Duration::from_secs(900), RateKey::Ip)
    );
    assert!(login.count_failures);
    assert_eq!(login.on_redis_down, Some(RedisDown::Deny));
}

#[test]
fn route_cache_settings_parse() {
    let file = r#"
[cache]
enabled = true
max_body = "64KiB"

[[routes]]
name = "products"
path = "/products/**"
cache = { ttl = "30s", tags = ["products", "catalog"] }

[[routes]]
name = "mine"
path = "/mine"
cache = { per_subject = true }

[[routes]]
name = "plain"
path = "/plain"
"#;
    let (s, _t) = sources(Some(file), &[], &[]);
    let cfg = Config::load(&s).unwrap();
    assert!(cfg.cache.enabled);
    assert_eq!(cfg.cache.max_body, 64 * 1024);
    assert_eq!(cfg.cache.max_entries, 10_000, "the default");
    let products = cfg.routes[0].cache.as_ref().unwrap();
    assert_eq!(products.ttl, Some(Duration::from_secs(30)));
    assert_eq!(&*products.tags, ["products", "catalog"]);
    assert!(!products.per_subject);
    let mine = cfg.routes[1].cache.as_ref().unwrap();
    assert_eq!((mine.ttl, mine.per_subject), (None, true));
    assert!(
        cfg.routes[2].cache.is_none(),
        "no cache key: no route cache"
    );
}

#[test]
fn tracing_is_off_by_default_and_reads_the_standard_variable_when_the_key_is_unset() {
    let (s, _t) = sources(None, &[], &[]);
    assert!(Config::load(&s).unwrap().trace.is_none());

    let (s, _t) = sources(
        None,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")],
        &[],
    );
    let t = Config::load(&s).unwrap().trace.expect("on");
    assert_eq!(t.traces_url, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(t.service_name, "portcullis");
    assert_eq!(t.sample_ratio, 1.0);

    // The key wins, even set empty (tracing off whatever the variable says).
    let (s, _t) = sources(
        Some("[trace]\notlp_endpoint = \"http://10.0.0.9:4318\"\nsample_ratio = 0.25\n"),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")],
        &[],
    );
    let t = Config::load(&s).unwrap().trace.expect("on");
    assert_eq!(t.traces_url, "http://10.0.0.9:4318/v1/traces");
    assert_eq!(t.sample_ratio, 0.25);
    let (s, _t) = sources(
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("PORTCULLIS_TRACE_OTLP_ENDPOINT", ""),
        ],
        &[],
    );
    assert!(Config::load(&s).unwrap().trace.is_none());
}

#[test]
fn bad_trace_settings_are_refused_naming_the_key() {
    for (env, key) in [
        (
            ("PORTCULLIS_TRACE_SAMPLE_RATIO", "1.5"),
            "trace.sample_ratio",
        ),
        (
            ("PORTCULLIS_TRACE_SAMPLE_RATIO", "-0.1"),
            "trace.sample_ratio",
        ),
        (
            ("PORTCULLIS_TRACE_OTLP_ENDPOINT", "grpc://x:4317"),
            "trace.otlp_endpoint",
        ),
        (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (("PORTCULLIS_TRACE_SERVICE_NAME", " "), "trace.service_name"),
    ] {
        let (s, _t) = sources(None, &[env], &[]);
        let errs = Config::load(&s).unwrap_err().0;
        assert!(errs.iter().any(|e| e.key == key), "{env:?}: {errs:?}");
    }
}
