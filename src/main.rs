//! Command line: parse arguments, load the config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dynamo_failover::config::Config;
use dynamo_failover::shutdown;

mod operator;

#[derive(Parser)]
#[command(
    name = "dynamo-failover",
    version,
    about = "DynamoDB multi-region probes and failover responder"
)]
struct Cli {
    /// Path of the TOML config file.
    #[arg(
        long,
        global = true,
        env = "DYNAMO_FAILOVER_CONFIG",
        default_value = "/etc/dynamo-failover/config.toml"
    )]
    config: PathBuf,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Probe every region's DynamoDB and serve the metrics.
    Exporter,
    /// Receive Alertmanager webhooks and move traffic.
    Responder,
    /// Run the exporter and the responder in one process.
    Serve,
    /// Validate the config, print the effective settings (secrets redacted), and exit.
    CheckConfig,
    /// Check the whole failover path once, read-only (DigitalOcean, AWS, DynamoDB, the state
    /// table, the agents, the application, notifications): a table, and exit status 1 if any
    /// check fails.
    Preflight(ClientArgs),
    /// Show the responder's state: active region, epoch, phase, region health, transitions.
    Status(ClientArgs),
    /// Ask the responder to move traffic to a region now (the live check still applies).
    Failover {
        /// Target region.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask the responder to move traffic back to the home region now.
    Failback(ClientArgs),
    /// Stop automatic moves: decisions are still recorded and notified (a dry run).
    Pause(ClientArgs),
    /// Resume automatic moves.
    Resume(ClientArgs),
    /// Run the agent of one application server (its own config file with an [agent] section):
    /// follow the placement, write the env file, reload, acknowledge.
    Agent {
        /// Validate the agent config, print it (secrets redacted) and exit.
        #[arg(long)]
        check: bool,
    },
    /// Print the token of agent NAME, derived from [responder.agents]'s secret (for the agent's
    /// token_file).
    AgentToken {
        #[arg(long)]
        name: String,
    },
    /// Record that traffic is in REGION when no state is stored (the state was lost while traffic
    /// was away from home); the responder refuses to start until the placement is adopted.
    Adopt {
        /// The region traffic is in now.
        #[arg(long)]
        region: String,
    },
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The responder's base URL (default: responder.listen from the config, https:// when it
    /// has [responder.tls]).
    #[arg(long)]
    url: Option<String>,
    /// PEM CA bundle that signed the responder's certificate; only it is trusted (default: the
    /// system roots).
    #[arg(long, env = "DYNAMO_FAILOVER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate to present (a responder with client_ca_file requires one).
    #[arg(long, env = "DYNAMO_FAILOVER_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// PEM key of --cert-file.
    #[arg(long, env = "DYNAMO_FAILOVER_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Send the admin token over plain HTTP to another machine (something else encrypts the
    /// path). Without it such a URL is refused.
    #[arg(long)]
    allow_plain_http: bool,
}

impl ClientArgs {
    fn target(self) -> operator::Target {
        operator::Target {
            url: self.url,
            tls: dynamo_failover::config::types::ClientTls {
                ca_file: self.ca_file,
                cert_file: self.cert_file,
                key_file: self.key_file,
                allow_plain_http: self.allow_plain_http,
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Command::Agent { check } = cli.command {
        return agent(&cli.config, check);
    }
    if let Command::CheckConfig = cli.command {
        return check_config(&cli.config);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dynamo-failover: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => unreachable!("handled above: secrets may be unreadable here"),
        // Probing is light, async work: one thread does it with less CPU and memory than a pool.
        Command::Exporter => run_on(Runtime::OneThread, run_exporter(config)),
        Command::Responder => run(run_responder(config)),
        Command::Serve => run(run_both(config)),
        Command::Preflight(c) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dynamo-failover: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(operator::preflight(config, c.target())) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("dynamo-failover: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status(c) => run(operator::call(config, c.target(), operator::Action::Status)),
        Command::Failover { to, client: c } => run(operator::call(
            config,
            c.target(),
            operator::Action::Failover(to),
        )),
        Command::Failback(c) => run(operator::call(
            config,
            c.target(),
            operator::Action::Failback,
        )),
        Command::Pause(c) => run(operator::call(config, c.target(), operator::Action::Pause)),
        Command::Resume(c) => run(operator::call(config, c.target(), operator::Action::Resume)),
        Command::Agent { .. } => unreachable!("handled above: the agent has its own config"),
        Command::AgentToken { name } => {
            let Some(agents) = config.responder.as_ref().and_then(|r| r.agents.as_ref()) else {
                eprintln!("dynamo-failover: the config has no [responder.agents] section");
                return ExitCode::from(2);
            };
            if !agents.agents.iter().any(|a| a.name == name) {
                eprintln!("dynamo-failover: `{name}` is not listed in [[responder.agents.agent]]");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                dynamo_failover::failover::agents::agent_token(&agents.secret, &name)
            );
            ExitCode::SUCCESS
        }
        Command::Adopt { region } => run(async move {
            let shared = dynamo_failover::aws::load_shared().await;
            let said = dynamo_failover::responder::adopt(&config, &shared, &region).await?;
            println!("{said}");
            Ok(())
        }),
    }
}

#[derive(Clone, Copy)]
enum Runtime {
    OneThread,
    Pool,
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_on(Runtime::Pool, fut)
}

fn run_on(kind: Runtime, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = match kind {
        Runtime::OneThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::Pool => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynamo-failover: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped on error");
            eprintln!("dynamo-failover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_exporter(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(config.exporter.listen)
        .await
        .with_context(|| format!("binding exporter.listen {}", config.exporter.listen))?;
    let shared = dynamo_failover::aws::load_shared().await;
    let (trigger, stop) = shutdown::channel();
    fire_on_signal(std::sync::Arc::new(trigger));
    dynamo_failover::exporter::run(config, shared, listener, stop).await
}

/// Validates the file's shape and prints the effective settings. A secret that cannot be read
/// here (its file is on the production machine, or its variable is set only there) is listed,
/// not an error: the roles themselves refuse to start without it.
fn check_config(path: &std::path::Path) -> ExitCode {
    let (config, unreadable) = match Config::load_shape(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dynamo-failover: {e}");
            return ExitCode::from(2);
        }
    };
    println!("# {} is valid; effective settings:", path.display());
    print!("{}", config.to_pretty());
    if !unreadable.is_empty() {
        println!(
            "# {} secret(s) could not be read here (every role needs them where it runs):",
            unreadable.len()
        );
        for e in &unreadable {
            println!("#   {e}");
        }
    }
    let mut tls = Vec::new();
    if let Some(t) = &config.exporter.tls {
        tls.push(("exporter.tls", TlsFiles::Server(t.clone())));
    }
    if let Some(r) = &config.responder {
        if let Some(t) = &r.tls {
            tls.push(("responder.tls", TlsFiles::Server(t.clone())));
        }
        tls.push((
            "responder.outbound_tls",
            TlsFiles::Client(r.outbound_tls.clone()),
        ));
    }
    if !check_tls(&tls) {
        return ExitCode::from(2);
    }
    match run(check_state_table(config)) {
        ExitCode::SUCCESS => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    }
}

enum TlsFiles {
    Server(dynamo_failover::config::types::ServerTls),
    Client(dynamo_failover::config::types::ClientTls),
}

/// Each section's TLS files, as the role would load them: readable, parseable, the key matching
/// the certificate, valid now (with the days left). Unreadable files are listed, like secrets;
/// a file that reads but is wrong fails the check.
fn check_tls(sections: &[(&str, TlsFiles)]) -> bool {
    use dynamo_failover::tls::{check_client_files, check_server_files, now_unix, FileCheck};
    let now = now_unix();
    let mut good = true;
    for (section, files) in sections {
        let said = match files {
            TlsFiles::Server(t) => check_server_files(t, now),
            TlsFiles::Client(t) if *t == Default::default() => continue,
            TlsFiles::Client(t) => check_client_files(t, now),
        };
        match said {
            FileCheck::Good(line) => println!("# [{section}] {line}"),
            FileCheck::Unreadable(files) => {
                println!(
                    "# [{section}] could not be read here (the role needs them where it runs):"
                );
                for f in files {
                    println!("#   {f}");
                }
            }
            FileCheck::Bad(e) => {
                eprintln!("dynamo-failover: [{section}] {e}");
                good = false;
            }
        }
    }
    good
}

/// With the DynamoDB state store, check-config also checks the table can hold a lease.
async fn check_state_table(config: Config) -> anyhow::Result<()> {
    use dynamo_failover::config::responder::StoreConfig;
    let Some(StoreConfig::Dynamodb {
        table,
        region,
        endpoint,
        timeout,
        ..
    }) = config.responder.as_ref().map(|r| &r.store)
    else {
        return Ok(());
    };
    let shared = dynamo_failover::aws::load_shared().await;
    let store = dynamo_failover::adapters::state_dynamodb::DynamoStore::new(
        dynamo_failover::aws::state_client(&shared, region, endpoint.as_deref(), *timeout),
        table,
        *timeout,
    );
    store
        .check_table()
        .await
        .map_err(|e| anyhow::anyhow!("config key `responder.state.table`: {e}"))?;
    println!("# state table {table} in {region} can hold the lease");
    Ok(())
}

async fn run_responder(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section; the responder role needs one")?;
    let listener = tokio::net::TcpListener::bind(r.listen)
        .await
        .with_context(|| format!("binding responder.listen {}", r.listen))?;
    let shared = dynamo_failover::aws::load_shared().await;
    let (trigger, stop) = shutdown::channel();
    fire_on_signal(std::sync::Arc::new(trigger));
    dynamo_failover::responder::run(config, shared, listener, stop).await
}

/// Both roles in one process, each on its own listener; either stopping stops both.
async fn run_both(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section; `serve` runs the responder too")?;
    let resp_listener = tokio::net::TcpListener::bind(r.listen)
        .await
        .with_context(|| format!("binding responder.listen {}", r.listen))?;
    let exp_listener = tokio::net::TcpListener::bind(config.exporter.listen)
        .await
        .with_context(|| format!("binding exporter.listen {}", config.exporter.listen))?;
    let shared = dynamo_failover::aws::load_shared().await;
    let (trigger, stop) = shutdown::channel();
    let trigger = std::sync::Arc::new(trigger);
    fire_on_signal(trigger.clone());
    let exp =
        dynamo_failover::exporter::run(config.clone(), shared.clone(), exp_listener, stop.clone());
    let resp = dynamo_failover::responder::run(config, shared, resp_listener, stop);
    let (a, b) = tokio::join!(
        async {
            let r = exp.await;
            trigger.fire();
            r
        },
        async {
            let r = resp.await;
            trigger.fire();
            r
        }
    );
    a.and(b)
}

/// The agent role: its own config file (`[agent]` only).
fn agent(path: &std::path::Path, check: bool) -> ExitCode {
    use dynamo_failover::config::agent::AgentConfig;
    let cfg = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dynamo-failover: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        println!("# {} is valid; effective settings:", path.display());
        print!("{}", cfg.to_pretty());
        let mut tls = vec![(
            "agent.responder_tls",
            TlsFiles::Client(cfg.responder_tls.clone()),
        )];
        if let Some(t) = &cfg.tls {
            tls.push(("agent.tls", TlsFiles::Server(t.clone())));
        }
        return if check_tls(&tls) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    run_on(Runtime::OneThread, async move {
        use anyhow::Context;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding agent.listen {}", cfg.listen))?;
        let (trigger, stop) = shutdown::channel();
        fire_on_signal(std::sync::Arc::new(trigger));
        dynamo_failover::agent::run(cfg, listener, stop).await
    })
}

/// Fires the shutdown on SIGTERM or Ctrl-C.
fn fire_on_signal(trigger: std::sync::Arc<shutdown::ShutdownTrigger>) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.fire();
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DYNAMO_FAILOVER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
