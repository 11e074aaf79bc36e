//! fakeforce: a local stand-in for the Salesforce REST API, faithful to the documented behaviour that a write-back
//! engine depends on (see the README's "fakeforce" section). Run it as a process (`fakeforce --help`) or in process:
//!
//! ```no_run
//! let ff = fakeforce::FakeForce::start(fakeforce::Config::default()).expect("start");
//! println!("Salesforce stand-in at {}", ff.url());
//! ```

pub mod bulk;
pub mod bulk_query;
pub mod composite;
pub mod config;
pub mod errors;
pub mod faults;
pub mod ids;
pub mod jobs;
pub mod model;
pub mod oauth;
pub mod org;
pub mod replication;
pub mod reply;
pub mod server;
pub mod soql;
pub mod store;
pub mod values;
pub mod writes;

pub use config::{AuthConfig, Config};
pub use faults::{Effect, FaultRule, Operation};
pub use org::Org;

use std::net::SocketAddr;
use std::sync::Arc;

/// A running stand-in on a background thread; stops when dropped.
pub struct FakeForce {
    url: String,
    org: Arc<Org>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot start the server thread: {0}")]
    Runtime(std::io::Error),
}

impl FakeForce {
    pub fn start(config: Config) -> Result<FakeForce, StartError> {
        let addr_text = format!("{}:{}", config.host, config.port);
        let addr: SocketAddr = addr_text.parse().map_err(|_| StartError::Bind {
            addr: addr_text.clone(),
            source: std::io::Error::other("not an IP address and port"),
        })?;
        let org = Arc::new(Org::new(config)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fakeforce")
            .build()
            .map_err(StartError::Runtime)?;
        let listener = runtime
            .block_on(async { server::bind(addr) })
            .map_err(|source| StartError::Bind { addr: addr_text.clone(), source })?;
        let local = listener.local_addr().map_err(|source| StartError::Bind { addr: addr_text, source })?;
        let url = format!("http://{local}");
        if let Ok(mut u) = org.base_url.lock() {
            *u = url.clone();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = org.clone();
        let thread = std::thread::Builder::new()
            .name("fakeforce".into())
            .spawn(move || {
                runtime.block_on(server::serve(serving, listener, async {
                    let _ = stopped.await;
                }))
            })
            .map_err(StartError::Runtime)?;
        Ok(FakeForce { url, org, stop: Some(stop), thread: Some(thread) })
    }

    /// `http://127.0.0.1:<port>`: the login URL and the `instance_url` the token endpoint hands out.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Direct access to the org (records, counters, fault rules) for in-process tests.
    pub fn org(&self) -> &Arc<Org> {
        &self.org
    }
}

impl Drop for FakeForce {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
