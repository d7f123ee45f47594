//! Layering the sources (defaults < file < environment < flags) and reading typed values.
//!
//! The loader never stops at the first problem: every bad value, unknown key and unknown
//! variable becomes a [`ConfigError`] naming the key and where its value came from, and
//! the caller reports them all at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::keys::{
    self, ENV_CONFIG_FILE, ENV_PREFIX, KEYS, KeyDef, MAPS, STRING_MAPS, TABLE_ARRAYS, Ty,
};
use super::value::{self, Parsed, Raw, mask_userinfo};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file, at a line.
    File {
        /// The file as given.
        path: Arc<str>,
        /// 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "from {path} line {line}"),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::Flag(flag) => write!(f, "from flag {flag}"),
        }
    }
}

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (`limits.body`, `routes[2].path`) or variable the problem is about.
    pub key: String,
    /// Where the offending value came from, when there was one.
    pub origin: Option<Origin>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

/// Every problem found, in the order of the file, then the environment, then the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration: {n} problem{} found",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A value given on the command line.
#[derive(Clone, Debug)]
pub struct Flag {
    /// The key it sets.
    pub key: &'static str,
    /// The flag as typed, e.g. `--listen`.
    pub flag: &'static str,
    /// The value.
    pub value: String,
}

/// What the configuration is read from. Tests build this directly, passing a map as the
/// environment instead of touching the process's own.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The configuration file (`--config`), if any. `PORTCULLIS_CONFIG` in `env` is used
    /// when this is `None`.
    pub file: Option<PathBuf>,
    /// The environment.
    pub env: BTreeMap<String, String>,
    /// Command-line flags.
    pub flags: Vec<Flag>,
}

impl Sources {
    /// The process's environment, the given file and flags.
    pub fn from_process(file: Option<PathBuf>, flags: Vec<Flag>) -> Self {
        Self {
            file,
            env: std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
                })
                .collect(),
            flags,
        }
    }

    /// The configuration file in effect: `--config`, else `PORTCULLIS_CONFIG`.
    pub fn config_file(&self) -> Option<(PathBuf, Origin)> {
        if let Some(f) = &self.file {
            return Some((f.clone(), Origin::Flag("--config")));
        }
        self.env
            .get(ENV_CONFIG_FILE)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), Origin::Env(ENV_CONFIG_FILE.into())))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads typed values for the keys in `defs`, from layered sources.
pub(crate) struct Loader<'a> {
    defs: &'static [KeyDef],
    prefix: String,
    file: HashMap<&'static str, (&'a DeValue<'a>, Origin)>,
    arrays: HashMap<&'static str, Vec<(&'a DeTable<'a>, Origin)>>,
    maps: HashMap<&'static str, Vec<(String, &'a DeTable<'a>, Origin)>>,
    string_maps: HashMap<&'static str, Vec<(String, String, Origin)>>,
    text: HashMap<&'static str, (&'a str, Origin)>,
    source: Option<(&'a str, Arc<str>)>,
    /// The whole environment, for the few standard variables outside `PORTCULLIS_*`.
    env: Option<&'a BTreeMap<String, String>>,
    pub(crate) errors: Vec<ConfigError>,
    #[cfg(test)]
    pub(crate) read: std::collections::HashSet<&'static str>,
}

impl<'a> Loader<'a> {
    fn empty(defs: &'static [KeyDef], prefix: String) -> Self {
        Self {
            defs,
            prefix,
            file: HashMap::new(),
            arrays: HashMap::new(),
            maps: HashMap::new(),
            string_maps: HashMap::new(),
            text: HashMap::new(),
            source: None,
            env: None,
            errors: Vec::new(),
            #[cfg(test)]
            read: Default::default(),
        }
    }

    /// The top-level loader over a parsed file (if any), the environment and flags.
    pub(crate) fn new(
        file: Option<(&'a DeTable<'a>, &'a str, Arc<str>)>,
        env: &'a BTreeMap<String, String>,
        flags: &'a [Flag],
    ) -> Self {
        let mut l = Self::empty(KEYS, String::new());
        l.env = Some(env);
        if let Some((table, text, path)) = file {
            l.source = Some((text, path.clone()));
            l.collect_file(table, "", text, &path);
        }
        l.collect_env(env);
        for f in flags {
            let def = keys::find(KEYS, f.key).expect("flags set defined keys");
            l.text
                .insert(def.key, (f.value.as_str(), Origin::Flag(f.flag)));
        }
        l
    }

    /// The members of the table `[full]` in file order, each read by `entry`; a member
    /// `entry` refuses, or a value that is no table, is an error naming it (`None` then
    /// for the whole table).
    fn map_entries<T>(
        &mut self,
        full: &str,
        value: &'a DeValue<'a>,
        origin: Origin,
        text: &'a str,
        path: &Arc<str>,
        entry: impl Fn(&'a DeValue<'a>) -> Result<T, &'static str>,
    ) -> Option<Vec<(String, T, Origin)>> {
        let DeValue::Table(entries) = value else {
            self.errors.push(ConfigError {
                key: full.to_owned(),
                origin: Some(origin),
                message: format!("expected a table [{full}]"),
            });
            return None;
        };
        let mut out = Vec::new();
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_by_key(|(k, _)| k.span().start);
        for (name, member) in sorted {
            let origin = Origin::File {
                path: path.clone(),
                line: line_of(text, name.span().start),
            };
            match entry(member.get_ref()) {
                Ok(v) => out.push((name.get_ref().to_string(), v, origin)),
                Err(message) => self.errors.push(ConfigError {
                    key: format!("{full}.{}", name.get_ref()),
                    origin: Some(origin),
                    message: message.into(),
                }),
            }
        }
        Some(out)
    }

    fn collect_file(
        &mut self,
        table: &'a DeTable<'a>,
        prefix: &str,
        text: &'a str,
        path: &Arc<str>,
    ) {
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (k, v) in entries {
            let full = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let origin = Origin::File {
                path: path.clone(),
                line: line_of(text, k.span().start),
            };
            if let Some(def) = keys::find(self.defs, &full) {
                self.file.insert(def.key, (v.get_ref(), origin));
            } else if let Some(map) = MAPS.iter().find(|m| m.key == full) {
                let out = self.map_entries(&full, v.get_ref(), origin, text, path, |e| match e {
                    DeValue::Table(t) => Ok(t),
                    _ => Err("expected a table such as { limit = 60, per = \"1m\" }"),
                });
                if let Some(out) = out {
                    self.maps.insert(map.key, out);
                }
            } else if let Some(map) = STRING_MAPS.iter().find(|m| m.key == full) {
                let out = self.map_entries(&full, v.get_ref(), origin, text, path, |e| match e {
                    DeValue::String(value) => Ok(value.to_string()),
                    _ => Err("expected a string"),
                });
                if let Some(out) = out {
                    self.string_maps.insert(map.key, out);
                }
            } else if let Some(arr) = TABLE_ARRAYS.iter().find(|a| a.key == full) {
                match v.get_ref() {
                    DeValue::Array(items) => {
                        let mut tables = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            let origin = Origin::File {
                                path: path.clone(),
                                line: line_of(text, item.span().start),
                            };
                            match item.get_ref() {
                                DeValue::Table(t) => tables.push((t, origin)),
                                _ => self.errors.push(ConfigError {
                                    key: format!("{full}[{i}]"),
                                    origin: Some(origin),
                                    message: format!("expected a table; write it as [[{full}]]"),
                                }),
                            }
                        }
                        self.arrays.insert(arr.key, tables);
                    }
                    _ => self.errors.push(ConfigError {
                        key: full.clone(),
                        origin: Some(origin),
                        message: format!("expected an array of tables; write each as [[{full}]]"),
                    }),
                }
            } else if self
                .defs
                .iter()
                .any(|d| d.key.starts_with(&format!("{full}.")))
            {
                match v.get_ref() {
                    DeValue::Table(t) => self.collect_file(t, &full, text, path),
                    _ => self.errors.push(ConfigError {
                        key: full.clone(),
                        origin: Some(origin),
                        message: format!("expected a table [{full}]"),
                    }),
                }
            } else {
                // Keys, the sections holding them, and the arrays of tables.
                let sections = self
                    .defs
                    .iter()
                    .filter_map(|d| d.key.rsplit_once('.').map(|(s, _)| s));
                let candidates = self
                    .defs
                    .iter()
                    .map(|d| d.key)
                    .chain(sections)
                    .chain(MAPS.iter().map(|m| m.key))
                    .chain(STRING_MAPS.iter().map(|m| m.key))
                    .chain(TABLE_ARRAYS.iter().map(|a| a.key));
                let hint = match keys::suggest(&full, candidates) {
                    Some(s) => format!("; did you mean {s}?"),
                    None => "; see `portcullis config-reference` for every key".into(),
                };
                self.errors.push(ConfigError {
                    key: format!("{}{full}", self.prefix),
                    origin: Some(origin),
                    message: format!("unknown key{hint}"),
                });
            }
        }
    }

    fn collect_env(&mut self, env: &'a BTreeMap<String, String>) {
        let by_env: HashMap<String, &'static KeyDef> = KEYS
            .iter()
            .filter(|d| keys::from_env(d))
            .map(|d| (keys::env_name(d.key), d))
            .collect();
        for (var, val) in env {
            if !var.starts_with(ENV_PREFIX) || var == ENV_CONFIG_FILE {
                continue;
            }
            // Debug builds only: the test hook of `telemetry::errors::debug`.
            #[cfg(debug_assertions)]
            if var == crate::telemetry::errors::debug::DEBUG_PANIC_PATH {
                continue;
            }
            match by_env.get(var) {
                Some(def) => {
                    self.text
                        .insert(def.key, (val.as_str(), Origin::Env(var.clone())));
                }
                None => {
                    let names: Vec<String> = by_env.keys().cloned().collect();
                    let hint = match keys::suggest(var, names.iter().map(String::as_str)) {
                        Some(s) => format!("; did you mean {s}?"),
                        None => {
                            "; every variable is listed by `portcullis config-reference`".into()
                        }
                    };
                    self.errors.push(ConfigError {
                        key: var.clone(),
                        origin: Some(Origin::Env(var.clone())),
                        message: format!("unknown environment variable{hint}"),
                    });
                }
            }
        }
    }

    fn def(&self, key: &str) -> &'static KeyDef {
        keys::find(self.defs, key)
            .unwrap_or_else(|| panic!("config key {key:?} is not declared in keys.rs"))
    }

    /// A variable outside `PORTCULLIS_*` (such as `OTEL_EXPORTER_OTLP_ENDPOINT`), if set
    /// and not empty.
    pub(crate) fn outside_env(&self, var: &'static str) -> Option<&'a str> {
        self.env?
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Whether a source other than the default set `key`.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        self.text.contains_key(key) || self.file.contains_key(key)
    }

    /// The origin of `key`'s effective value.
    pub(crate) fn origin(&self, key: &str) -> Origin {
        if let Some((_, o)) = self.text.get(key) {
            return o.clone();
        }
        if let Some((_, o)) = self.file.get(key) {
            return o.clone();
        }
        Origin::Default
    }

    /// Records a problem with `key`'s effective value.
    pub(crate) fn error(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.errors.push(ConfigError {
            key: format!("{}{key}", self.prefix),
            origin: (origin != Origin::Default).then_some(origin),
            message: message.into(),
        });
    }

    fn get<T>(&mut self, key: &'static str, parse: impl Fn(Raw<'_>) -> Parsed<T>) -> T {
        let def = self.def(key);
        #[cfg(test)]
        self.read.insert(def.key);
        let (raw, origin) = if let Some((s, o)) = self.text.get(key) {
            (Raw::Text(s), o.clone())
        } else if let Some((v, o)) = self.file.get(key) {
            (Raw::Toml(v), o.clone())
        } else {
            if def.required {
                self.errors.push(ConfigError {
                    key: format!("{}{key}", self.prefix),
                    origin: None,
                    message: "required, and missing".into(),
                });
            }
            return self.default_of(def, &parse);
        };
        match parse(raw) {
            Ok(v) => v,
            Err(expected) => {
                let got = if def.secret {
                    "a value that is not shown because it may hold a secret".to_owned()
                } else {
                    mask_userinfo(&raw.display())
                };
                self.errors.push(ConfigError {
                    key: format!("{}{key}", self.prefix),
                    origin: Some(origin),
                    message: format!("{expected}; got {got}"),
                });
                self.default_of(def, &parse)
            }
        }
    }

    fn default_of<T>(&self, def: &KeyDef, parse: &impl Fn(Raw<'_>) -> Parsed<T>) -> T {
        let v = DeValue::parse(def.default)
            .unwrap_or_else(|e| panic!("default of {} is not TOML: {e}", def.key));
        parse(Raw::Toml(v.get_ref()))
            .unwrap_or_else(|e| panic!("default of {} does not parse: {e}", def.key))
    }

    pub(crate) fn boolean(&mut self, key: &'static str) -> bool {
        assert!(matches!(self.def(key).ty, Ty::Bool), "{key} is not a bool");
        self.get(key, value::boolean)
    }

    pub(crate) fn int(&mut self, key: &'static str) -> i64 {
        let Ty::Int { min, max } = self.def(key).ty else {
            panic!("{key} is not an int")
        };
        self.get(key, |r| value::integer(r, min, max))
    }

    /// An integer key without a default: `None` unless a source sets it.
    pub(crate) fn opt_int(&mut self, key: &'static str) -> Option<i64> {
        let Ty::Int { min, max } = self.def(key).ty else {
            panic!("{key} is not an int")
        };
        self.opt(key, |r| value::integer(r, min, max))
    }

    /// A size key without a default: `None` unless a source sets it.
    pub(crate) fn opt_size(&mut self, key: &'static str) -> Option<u64> {
        let Ty::Size { min, max } = self.def(key).ty else {
            panic!("{key} is not a size")
        };
        self.opt(key, |r| value::size(r, min, max))
    }

    /// A duration key without a default: `None` unless a source sets it.
    pub(crate) fn opt_duration(&mut self, key: &'static str) -> Option<Duration> {
        let Ty::Duration { min, max } = self.def(key).ty else {
            panic!("{key} is not a duration")
        };
        self.opt(key, |r| value::duration(r, min, max))
    }

    /// A key without a default (`UNSET`): `None` unless a source sets it; a bad value is
    /// an error and `None`.
    fn opt<T>(&mut self, key: &'static str, parse: impl Fn(Raw<'_>) -> Parsed<T>) -> Option<T> {
        let def = self.def(key);
        assert!(
            def.default == keys::UNSET || def.required,
            "{key} has a default; read it with its typed getter"
        );
        #[cfg(test)]
        self.read.insert(def.key);
        let (raw, origin) = if let Some((s, o)) = self.text.get(key) {
            (Raw::Text(s), o.clone())
        } else if let Some((v, o)) = self.file.get(key) {
            (Raw::Toml(v), o.clone())
        } else {
            return None;
        };
        match parse(raw) {
            Ok(v) => Some(v),
            Err(expected) => {
                self.errors.push(ConfigError {
                    key: format!("{}{key}", self.prefix),
                    origin: Some(origin),
                    message: format!("{expected}; got {}", mask_userinfo(&raw.display())),
                });
                None
            }
        }
    }

    pub(crate) fn float(&mut self, key: &'static str) -> f64 {
        let Ty::Float { min, max } = self.def(key).ty else {
            panic!("{key} is not a float")
        };
        self.get(key, |r| value::float(r, min, max))
    }

    pub(crate) fn duration(&mut self, key: &'static str) -> Duration {
        let Ty::Duration { min, max } = self.def(key).ty else {
            panic!("{key} is not a duration")
        };
        self.get(key, |r| value::duration(r, min, max))
    }

    pub(crate) fn size(&mut self, key: &'static str) -> u64 {
        let Ty::Size { min, max } = self.def(key).ty else {
            panic!("{key} is not a size")
        };
        self.get(key, |r| value::size(r, min, max))
    }

    pub(crate) fn addr(&mut self, key: &'static str) -> SocketAddr {
        assert!(
            matches!(self.def(key).ty, Ty::Addr),
            "{key} is not an address"
        );
        self.get(key, value::addr)
    }

    pub(crate) fn string(&mut self, key: &'static str) -> String {
        assert!(
            matches!(
                self.def(key).ty,
                Ty::Str | Ty::Glob | Ty::HttpUrl | Ty::RedisUrl
            ),
            "{key} is not a string"
        );
        self.get(key, value::text)
    }

    pub(crate) fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        assert!(matches!(self.def(key).ty, Ty::Path), "{key} is not a path");
        let s = self.get(key, value::text);
        (!s.trim().is_empty()).then(|| PathBuf::from(s))
    }

    pub(crate) fn choice(&mut self, key: &'static str) -> &'static str {
        let Ty::Enum(choices) = self.def(key).ty else {
            panic!("{key} is not an enum")
        };
        self.get(key, |r| value::choice(r, choices))
    }

    pub(crate) fn list(&mut self, key: &'static str) -> Vec<String> {
        assert!(
            matches!(self.def(key).ty, Ty::StrList),
            "{key} is not a list"
        );
        self.get(key, value::list)
    }

    pub(crate) fn cidrs(&mut self, key: &'static str) -> Vec<IpNet> {
        assert!(
            matches!(self.def(key).ty, Ty::CidrList),
            "{key} is not a CIDR list"
        );
        self.get(key, value::cidrs)
    }

    pub(crate) fn methods(&mut self, key: &'static str) -> Vec<String> {
        assert!(
            matches!(self.def(key).ty, Ty::Methods),
            "{key} is not a method list"
        );
        self.get(key, value::methods)
    }

    /// The entries of the string table `key` (such as `[headers.set]`), in file order.
    pub(crate) fn string_map(&mut self, key: &'static str) -> Vec<(String, String, Origin)> {
        assert!(
            STRING_MAPS.iter().any(|m| m.key == key),
            "{key} is not a declared string map"
        );
        self.string_maps.remove(key).unwrap_or_default()
    }

    /// Records a problem with an entry of a table, at its origin.
    pub(crate) fn error_at(&mut self, key: String, origin: Origin, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key,
            origin: Some(origin),
            message: message.into(),
        });
    }

    /// A loader per entry of the table of tables `key` (file entries over the defaults),
    /// with the entry's name.
    pub(crate) fn map_tables(&mut self, key: &'static str) -> Vec<(String, Loader<'a>)> {
        let def = MAPS.iter().find(|m| m.key == key).expect("declared map");
        let from_file = self.maps.remove(key).unwrap_or_default();
        let mut out: Vec<(String, Loader<'a>)> = Vec::new();
        for (name, default) in def.defaults {
            if from_file.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            let mut child = Loader::empty(def.fields, format!("{key}.{name}."));
            // Defaults are TOML too: parse them into owned values the child can read.
            child.defaults_from(default);
            out.push(((*name).to_owned(), child));
        }
        for (name, table, _origin) in from_file {
            let mut child = Loader::empty(def.fields, format!("{key}.{name}."));
            child.source = self.source.clone();
            child.collect_table(table);
            out.push((name, child));
        }
        out
    }

    /// Fills a child loader's text values from an inline TOML table of defaults.
    fn defaults_from(&mut self, inline: &'static str) {
        let Ok(v) = DeValue::parse(inline) else {
            return;
        };
        // Leaked once per default at start-up: a handful of bytes, for borrowed values.
        let v: &'static toml::Spanned<DeValue<'static>> = Box::leak(Box::new(v));
        if let DeValue::Table(t) = v.get_ref() {
            for (k, val) in t.iter() {
                if let Some(def) = keys::find(self.defs, k.get_ref()) {
                    self.file.insert(def.key, (val.get_ref(), Origin::Default));
                }
            }
        }
    }

    /// A loader per table of the array of tables `key` (file only), and where each starts.
    pub(crate) fn table_array(&mut self, key: &'static str) -> Vec<(Loader<'a>, Origin)> {
        let def = TABLE_ARRAYS
            .iter()
            .find(|a| a.key == key)
            .expect("declared array of tables");
        let tables = self.arrays.remove(key).unwrap_or_default();
        let mut out = Vec::with_capacity(tables.len());
        for (i, (table, origin)) in tables.into_iter().enumerate() {
            let mut child = Loader::empty(def.fields, format!("{key}[{i}]."));
            child.source = self.source.clone();
            child.collect_table(table);
            out.push((child, origin));
        }
        out
    }

    fn collect_table(&mut self, table: &'a DeTable<'a>) {
        self.collect_table_at(table, "");
    }

    /// Collects the keys of one table of an array of tables; inline tables inside it
    /// (`login = { username_field = "email" }`) are read as dotted keys.
    fn collect_table_at(&mut self, table: &'a DeTable<'a>, prefix: &str) {
        let Some((text, path)) = self.source.clone() else {
            return;
        };
        for (k, v) in table.iter() {
            let name = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let origin = Origin::File {
                path: path.clone(),
                line: line_of(text, k.span().start),
            };
            if let Some(def) = keys::find(self.defs, &name) {
                self.file.insert(def.key, (v.get_ref(), origin));
                continue;
            }
            if self
                .defs
                .iter()
                .any(|d| d.key.starts_with(&format!("{name}.")))
            {
                match v.get_ref() {
                    DeValue::Table(t) if t.is_empty() => {
                        let inner: Vec<&str> = self
                            .defs
                            .iter()
                            .filter_map(|d| d.key.strip_prefix(&format!("{name}.")))
                            .collect();
                        self.errors.push(ConfigError {
                            key: format!("{}{name}", self.prefix),
                            origin: Some(origin),
                            message: format!(
                                "an empty table sets nothing; set one of {}",
                                inner.join(", ")
                            ),
                        });
                    }
                    DeValue::Table(t) => self.collect_table_at(t, &name),
                    _ => self.errors.push(ConfigError {
                        key: format!("{}{name}", self.prefix),
                        origin: Some(origin),
                        message: format!("expected a table, e.g. {name} = {{ ... }}"),
                    }),
                }
                continue;
            }
            let hint = match keys::suggest(&name, self.defs.iter().map(|d| d.key)) {
                Some(s) => format!("; did you mean {s}?"),
                None => {
                    let known: Vec<&str> = self.defs.iter().map(|d| d.key).collect();
                    format!("; known keys here: {}", known.join(", "))
                }
            };
            self.errors.push(ConfigError {
                key: format!("{}{name}", self.prefix),
                origin: Some(origin),
                message: format!("unknown key{hint}"),
            });
        }
    }

    /// Takes a child loader's problems.
    pub(crate) fn absorb(&mut self, child: Loader<'a>) {
        self.errors.extend(child.errors);
    }
}
