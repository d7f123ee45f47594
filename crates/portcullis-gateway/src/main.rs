//! The `portcullis` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use portcullis_gateway::config::{Config, ConfigErrors, Flag, Sources, Upstream};
use portcullis_gateway::telemetry::{log, metrics::Metrics};
use portcullis_gateway::{demo, prepare, serve, shutdown_signal};

/// mimalloc instead of glibc's malloc: a request allocates and frees many small objects
/// across threads, where glibc's arenas spent a tenth of the proxy's CPU time (profiled
/// with `perf` under `wrk`; figures in benches/proxy/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for invalid configuration or arguments.
const EXIT_CONFIG: u8 = 2;
/// Exit code for failures after the configuration was accepted (e.g. a port in use).
const EXIT_RUNTIME: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "An API protection gateway: rate limits, auth, CSRF, validation and logging in front of any HTTP upstream."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway in front of a built-in echo upstream and print a walkthrough.
    Demo(DemoArgs),
    /// Run the gateway in front of an upstream.
    Serve(ServeArgs),
    /// Validate the configuration: exit 0 with a summary, or exit 2 with every problem.
    CheckConfig(ServeArgs),
    /// Print every configuration option (key, environment variable, type, default, meaning) as Markdown.
    ConfigReference,
    /// Manage the users file (argon2id password hashes).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Print a new Ed25519 signing key (PKCS#8 PEM) for auth.signing_key_file.
    GenerateKey,
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Documentation generated from the effective configuration.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check an audit log's hash chain: exit 0 when intact, 1 naming the first bad record.
    Verify {
        /// The audit log (`audit.file`).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DocsCommand {
    /// Every endpoint's and tier's rate limit, as Markdown.
    RateLimits {
        /// TOML configuration file (else PORTCULLIS_CONFIG).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a user; the password is read from the terminal, or one line of standard input.
    Add {
        /// The username (canonicalised: width-mapped, lower-cased, NFC).
        name: String,
        /// A role (repeat for several).
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// The users file (else PORTCULLIS_AUTH_USERS_FILE).
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
    },
    /// Change a user's password.
    Passwd {
        /// The username.
        name: String,
        /// The users file (else PORTCULLIS_AUTH_USERS_FILE).
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
    },
    /// Remove a user.
    Remove {
        /// The username.
        name: String,
        /// The users file (else PORTCULLIS_AUTH_USERS_FILE).
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
    },
    /// List users and their roles.
    List {
        /// The users file (else PORTCULLIS_AUTH_USERS_FILE).
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Address of the main listener [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the admin listener [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML configuration file (else PORTCULLIS_CONFIG, else defaults and environment only).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The protected service, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Address of the main listener.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the admin listener.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Redis for shared state, e.g. redis://127.0.0.1:6379/0 (else state stays in memory).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

fn flags<const N: usize>(pairs: [(&'static str, &'static str, Option<String>); N]) -> Vec<Flag> {
    pairs
        .into_iter()
        .filter_map(|(key, flag, v)| v.map(|value| Flag { key, flag, value }))
        .collect()
}

impl ServeArgs {
    fn sources(self) -> Sources {
        let flags = flags([
            ("upstream", "--upstream", self.upstream),
            ("listen", "--listen", self.listen),
            ("admin_listen", "--admin-listen", self.admin_listen),
            ("redis.url", "--redis-url", self.redis_url),
        ]);
        Sources::from_process(self.config, flags)
    }
}

fn report(errors: &ConfigErrors) -> ExitCode {
    eprint!("portcullis: {errors}");
    ExitCode::from(EXIT_CONFIG)
}

/// One worker per CPU the process may run on. On a single CPU (pinned, or a one-core
/// container) the current-thread scheduler does the same work without the cross-thread
/// bookkeeping of the work-stealing one.
fn runtime() -> tokio::runtime::Runtime {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .thread_name("portcullis")
        .build()
        .expect("the tokio runtime starts")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ConfigReference => {
            print!("{}", portcullis_gateway::config::reference::markdown());
            ExitCode::SUCCESS
        }
        Command::CheckConfig(args) => check_config(args.sources()),
        Command::Users { command } => users(command),
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => match std::fs::File::open(&file) {
            Err(e) => {
                eprintln!("portcullis: cannot read {}: {e}", file.display());
                ExitCode::from(EXIT_RUNTIME)
            }
            Ok(f) => match portcullis_core::audit::verify(f) {
                Ok(n) => {
                    println!("{}: {n} records, chain intact", file.display());
                    ExitCode::SUCCESS
                }
                Err(broken) => {
                    eprintln!("portcullis: {}: chain broken at {broken}", file.display());
                    ExitCode::from(1)
                }
            },
        },
        Command::Docs {
            command: DocsCommand::RateLimits { config },
        } => match Config::load(&Sources::from_process(config, Vec::new())) {
            Ok(c) => {
                print!("{}", portcullis_gateway::ratelimit_docs::markdown(&c));
                ExitCode::SUCCESS
            }
            Err(e) => report(&e),
        },
        Command::GenerateKey => match portcullis_core::token::KeySet::generate_pem() {
            Ok(pem) => {
                print!("{pem}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Command::Serve(args) => run(args.sources(), false),
        Command::Demo(args) => {
            let f = flags([
                ("listen", "--listen", args.listen),
                ("admin_listen", "--admin-listen", args.admin_listen),
                ("upstream", "--upstream", None),
            ]);
            run(Sources::from_process(None, f), true)
        }
    }
}

fn users(command: UsersCommand) -> ExitCode {
    use portcullis_gateway::users_cli;
    let result = match command {
        UsersCommand::Add {
            name,
            roles,
            users_file,
        } => users_cli::users_path(users_file).and_then(|p| users_cli::add(&p, &name, &roles)),
        UsersCommand::Passwd { name, users_file } => {
            users_cli::users_path(users_file).and_then(|p| users_cli::passwd(&p, &name))
        }
        UsersCommand::Remove { name, users_file } => {
            users_cli::users_path(users_file).and_then(|p| users_cli::remove(&p, &name))
        }
        UsersCommand::List { users_file } => {
            users_cli::users_path(users_file).and_then(|p| users_cli::list(&p))
        }
    };
    match result {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn check_config(sources: Sources) -> ExitCode {
    let config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let prepared = match prepare(config) {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    let c = &prepared.config;
    println!("configuration OK");
    println!(
        "  listen        {} ({})",
        c.listen,
        if c.tls.is_some() {
            "TLS, HTTP/2 and HTTP/1.1"
        } else {
            "HTTP/1.1"
        }
    );
    println!("  admin_listen  {}", c.admin_listen);
    if let Some(u) = &c.upstream {
        println!("  upstream      {u}");
    }
    println!(
        "  store         {}",
        if c.store.redis.is_some() {
            "redis (connected on first use)"
        } else {
            "memory"
        }
    );
    println!("  routes        {}", c.routes.len());
    for r in &c.routes {
        let methods = r.methods.as_ref().map_or_else(
            || "*".to_owned(),
            |m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        );
        println!("    - {} {} [{}]", r.name, r.path.as_str(), methods);
    }
    ExitCode::SUCCESS
}

fn run(sources: Sources, demo_mode: bool) -> ExitCode {
    let rt = runtime();
    rt.block_on(async move {
        let mut config = match Config::load(&sources) {
            Ok(c) => c,
            Err(e) => return report(&e),
        };
        let mut demo_users = Vec::new();
        let echo = if demo_mode {
            match demo::start_echo().await {
                Ok(addr) => {
                    config.upstream = Upstream::parse(&format!("http://{addr}")).ok();
                    // Tokens as cookies too, so the walkthrough can show a browser
                    // session with its CSRF token.
                    config.auth.cookies = true;
                    demo::add_routes(&mut config);
                    if config.auth.users_file.is_none() {
                        match demo::create_users(&std::env::temp_dir()) {
                            Ok((path, users)) => {
                                config.auth.users_file = Some(path);
                                demo_users = users;
                            }
                            Err(e) => {
                                eprintln!("portcullis: cannot create the demo users: {e}");
                                return ExitCode::from(EXIT_RUNTIME);
                            }
                        }
                    }
                    Some(addr)
                }
                Err(e) => {
                    eprintln!("portcullis: cannot start the demo upstream: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
        } else {
            None
        };
        let mut prepared = match prepare(config) {
            Ok(p) => p,
            Err(e) => return report(&e),
        };
        let output = prepared
            .log_output
            .take()
            .unwrap_or_else(|| Box::new(std::io::stdout()));
        let guard = log::install(&prepared.config.log, output);
        portcullis_gateway::telemetry::errors::install_panic_hook();
        let metrics = Metrics::install();
        if let Some(echo) = echo {
            println!(
                "{}",
                demo::walkthrough(
                    prepared.config.listen,
                    prepared.config.admin_listen,
                    echo,
                    &demo_users
                )
            );
        }
        let code = match serve(prepared, metrics, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(key = %e.key, error = %e.message, "cannot start");
                eprintln!("portcullis: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        };
        // Flushes every buffered line before the process exits.
        drop(guard);
        code
    })
}
