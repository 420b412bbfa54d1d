//! Command line: parse arguments, load the config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dynamo_failover::config::Config;
use dynamo_failover::shutdown;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dynamo-failover: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            println!("# {} is valid; effective settings:", cli.config.display());
            print!("{}", config.to_pretty());
            ExitCode::SUCCESS
        }
        Command::Exporter => run(run_exporter(config)),
        Command::Responder | Command::Serve => {
            eprintln!(
                "dynamo-failover: the responder role is not part of this build yet; run `exporter`"
            );
            ExitCode::from(2)
        }
    }
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
    let shared = dynamo_failover::probe::client::load_shared().await;
    let (trigger, stop) = shutdown::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.fire();
    });
    dynamo_failover::exporter::run(config, shared, listener, stop).await
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
