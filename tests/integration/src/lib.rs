//! A throwaway PostgreSQL cluster for out-of-process tests.
//!
//! `PGFORCE_PG_CONFIG` names the `pg_config` of the server to use (pgforce must be installed into it). Clusters
//! run as the `postgres` OS user, since Postgres refuses root, and are stopped and removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Cluster {
    bindir: PathBuf,
    datadir: PathBuf,
    pub port: u16,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs a server binary as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl Cluster {
    /// Starts a new cluster; `preload` puts pgforce in `shared_preload_libraries`.
    pub fn start(preload: bool) -> Cluster {
        let pg_config = std::env::var("PGFORCE_PG_CONFIG")
            .expect("PGFORCE_PG_CONFIG must name the pg_config of a PostgreSQL with pgforce installed (scripts/test.sh sets it)");
        let out = run(Command::new(&pg_config).arg("--bindir"));
        let bindir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let port = free_port();
        let datadir = std::env::temp_dir().join(format!("pgforce-it-{}-{port}", std::process::id()));
        run(Command::new("mkdir").arg("-p").arg(&datadir));
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(&datadir));
        }
        run(as_postgres(&bindir.join("initdb")).args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&datadir));
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            datadir.display()
        );
        if preload {
            conf.push_str("shared_preload_libraries = 'pgforce'\n");
        }
        std::fs::write(datadir.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
        run(as_postgres(&bindir.join("pg_ctl")).args(["-w", "-l"]).arg(datadir.join("server.log")).arg("-D").arg(&datadir).arg("start"));
        Cluster { bindir, datadir, port }
    }

    /// Client settings for this cluster, to adjust before connecting (e.g. a notice callback).
    pub fn config(&self, user: &str, database: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user(user).dbname(database);
        config
    }

    pub fn connect(&self, user: &str, database: &str) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.config(user, database).connect(postgres::NoTls) {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("connect to port {}: {e}", self.port),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A superuser connection to the `postgres` database.
    pub fn admin(&self) -> postgres::Client {
        self.connect("postgres", "postgres")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.datadir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl")).args(["-m", "immediate", "-D"]).arg(&self.datadir).arg("stop").output();
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
