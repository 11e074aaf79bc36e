//! `fakeforce`: run the Salesforce stand-in as a process.

use clap::Parser;
use fakeforce::{server, Config, Org};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A local stand-in for the Salesforce REST API: OAuth 2.0 token endpoint (client credentials, JWT bearer,
/// refresh token), sObject Collections and single-record writes, Bulk API 2.0 ingest, SOQL read-back, /limits and
/// Sforce-Limit-Info, and fault injection through the config file or the admin endpoints under /fakeforce/admin/.
///
/// Settings come from the TOML config file (every key optional; see the README) and the options below, which
/// override it. Prints "fakeforce listening on http://HOST:PORT" once it accepts connections.
#[derive(Parser, Debug)]
#[command(name = "fakeforce", version, about, long_about)]
struct Args {
    /// TOML config file: credentials, data model, faults, limits.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, short)]
    port: Option<u16>,
    /// Write the base URL to this file once listening (for scripts that started it with --port 0).
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// Seed for fault rates, latency jitter and Bulk result order.
    #[arg(long)]
    seed: Option<u64>,
    /// Latency added to every data call, in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Extra random latency, uniform in 0..=N milliseconds.
    #[arg(long)]
    latency_jitter_ms: Option<u64>,
    /// Daily API request budget (Sforce-Limit-Info, /limits; 403 REQUEST_LIMIT_EXCEEDED when spent).
    #[arg(long)]
    daily_api_requests: Option<u64>,
    /// How long a closed Bulk API 2.0 job takes to complete, in milliseconds.
    #[arg(long)]
    bulk_processing_ms: Option<u64>,
    /// Connected app consumer key.
    #[arg(long)]
    client_id: Option<String>,
    /// Connected app consumer secret.
    #[arg(long)]
    client_secret: Option<String>,
    /// Integration username (the `sub` of JWT bearer assertions).
    #[arg(long)]
    username: Option<String>,
    /// PEM file with the RSA public key JWT bearer assertions are verified with.
    #[arg(long)]
    jwt_public_key: Option<PathBuf>,
    /// Access tokens expire this many seconds after issue (0 = never).
    #[arg(long)]
    token_ttl_secs: Option<u64>,
    /// Access tokens expire after this many data calls (0 = never).
    #[arg(long)]
    token_max_calls: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("fakeforce: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    macro_rules! set {
        ($($arg:ident => $($field:ident).+),* $(,)?) => { $( if let Some(v) = args.$arg.clone() { config.$($field).+ = v; } )* };
    }
    set!(host => host, port => port, seed => seed, latency_ms => latency_ms, latency_jitter_ms => latency_jitter_ms,
         daily_api_requests => daily_api_requests, bulk_processing_ms => bulk_processing_ms,
         client_id => auth.client_id, client_secret => auth.client_secret, username => auth.username,
         token_ttl_secs => auth.token_ttl_secs, token_max_calls => auth.token_max_calls);
    if let Some(key) = &args.jwt_public_key {
        config.auth.jwt_public_key = Some(key.clone());
    }
    match run(config, args.url_file) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fakeforce: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(config: Config, url_file: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = format!("{}:{}", config.host, config.port).parse()?;
    let org = Arc::new(Org::new(config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = server::bind(addr)?;
        let url = format!("http://{}", listener.local_addr()?);
        if let Ok(mut u) = org.base_url.lock() {
            *u = url.clone();
        }
        if let Some(path) = url_file {
            std::fs::write(path, format!("{url}\n"))?;
        }
        println!("fakeforce listening on {url}");
        std::io::stdout().flush()?;
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        server::serve(org, listener, stop).await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
