//! A throwaway PostgreSQL cluster for out-of-process tests.
//!
//! `PGFORCE_PG_CONFIG` names the `pg_config` of the server to use (pgforce must be installed into it). Clusters
//! run as the `postgres` OS user, since Postgres refuses root, and are stopped and removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod attack;

pub struct Cluster {
    bindir: PathBuf,
    datadir: PathBuf,
    pub port: u16,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    /// Starts a new cluster; `preload` puts pgforce in `shared_preload_libraries`. Delivery is off
    /// (`pgforce.enabled = off`): tests of capture see the log exactly as written.
    pub fn start(preload: bool) -> Cluster {
        Cluster::start_with(preload, &["pgforce.enabled = off".to_string()])
    }

    /// Starts a new cluster with extra `postgresql.conf` lines.
    pub fn start_with(preload: bool, settings: &[String]) -> Cluster {
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
        run(as_postgres(&bindir.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&datadir));
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            datadir.display()
        );
        if preload {
            conf.push_str("shared_preload_libraries = 'pgforce'\n");
        }
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(datadir.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
        run(as_postgres(&bindir.join("pg_ctl"))
            .args(["-w", "-l"])
            .arg(datadir.join("server.log"))
            .arg("-D")
            .arg(&datadir)
            .arg("start"));
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

    /// Stops the server the hard way (no checkpoint, like a power cut) and starts it again.
    pub fn crash_and_restart(&self) {
        run(as_postgres(&self.bindir.join("pg_ctl")).args(["-m", "immediate", "-D"]).arg(&self.datadir).arg("stop"));
        self.start_server();
    }

    fn start_server(&self) {
        run(as_postgres(&self.bindir.join("pg_ctl"))
            .args(["-w", "-l"])
            .arg(self.datadir.join("server.log"))
            .arg("-D")
            .arg(&self.datadir)
            .arg("start"));
    }

    /// What a restored file-level backup looks like: stops this server, copies its data directory, and starts both,
    /// the copy on a port of its own (with its own server log).
    pub fn copy(&self) -> Cluster {
        run(as_postgres(&self.bindir.join("pg_ctl")).args(["-m", "fast", "-w", "-D"]).arg(&self.datadir).arg("stop"));
        let port = free_port();
        let datadir = std::env::temp_dir().join(format!("pgforce-it-{}-{port}", std::process::id()));
        run(Command::new("cp").arg("-a").arg(&self.datadir).arg(&datadir));
        let _ = std::fs::remove_file(datadir.join("server.log"));
        let conf = std::fs::read_to_string(datadir.join("postgresql.auto.conf")).expect("read postgresql.auto.conf");
        let conf: String = conf
            .lines()
            .map(|l| {
                if l.starts_with("port = ") {
                    format!("port = {port}\n")
                } else if l.starts_with("unix_socket_directories") {
                    format!("unix_socket_directories = '{}'\n", datadir.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(datadir.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
        if is_root() {
            run(Command::new("chown").arg("-R").arg("postgres").arg(&datadir));
        }
        self.start_server();
        let copy = Cluster { bindir: self.bindir.clone(), datadir, port };
        copy.start_server();
        copy
    }

    /// The sync worker's process id, once it runs.
    pub fn worker_pid(&self) -> Option<i32> {
        let mut c = self.config("postgres", "postgres").connect(postgres::NoTls).ok()?;
        let row =
            c.query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker'", &[]).ok()??;
        Some(row.get(0))
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.datadir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test shows what the server said (the worker's messages among it), the last lines first cut.
            let log = self.server_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- server log (last 60 lines) ---\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
        // PGFORCE_KEEP_LOG=<file> keeps the whole of each cluster's log, failed or not (appended).
        if let Ok(keep) = std::env::var("PGFORCE_KEEP_LOG") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(keep) {
                let _ = f.write_all(self.server_log().as_bytes());
            }
        }
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.datadir)
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}

/// Copies a file to where the server (running as `postgres`) can read it, owned by that user, mode 600.
pub fn file_for_server(source: &Path, name: &str) -> PathBuf {
    let target = std::env::temp_dir().join(format!("pgforce-{}-{name}", std::process::id()));
    std::fs::copy(source, &target).unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
    if is_root() {
        run(Command::new("chown").arg("postgres").arg(&target));
    }
    run(Command::new("chmod").arg("600").arg(&target));
    target
}

/// How many log entries are still queued (`NEW`) or being sent (`PENDING`).
pub fn open_entries(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING')", &[])
        .expect("queued log entries")
        .get(0)
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

/// fakeforce in process, with the admin calls tests use.
pub struct Salesforce {
    pub ff: fakeforce::FakeForce,
    agent: ureq::Agent,
}

impl Salesforce {
    pub fn start() -> Salesforce {
        Salesforce::start_with(fakeforce::Config::default())
    }

    pub fn start_with(config: fakeforce::Config) -> Salesforce {
        let ff = fakeforce::FakeForce::start(config).expect("fakeforce starts");
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Salesforce { ff, agent }
    }

    /// `postgresql.conf` lines that point the sync worker at this stand-in.
    pub fn settings(&self) -> Vec<String> {
        vec![
            format!("pgforce.login_url = '{}'", self.ff.url()),
            "pgforce.client_id = 'pgforce-demo-client'".into(),
            "pgforce.client_secret = 'pgforce-demo-secret'".into(),
            "pgforce.request_timeout = '5s'".into(),
        ]
    }

    pub fn admin(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/fakeforce/admin{path}", self.ff.url());
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "PUT" => self.agent.put(&url).send_json(body),
            "PATCH" => self.agent.patch(&url).send_json(body),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(body),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        r.body_mut().with_config().limit(u64::MAX).read_json().unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Every record of an object (deleted ones too), each with `_writes`.
    pub fn records(&self, object: &str) -> Vec<serde_json::Value> {
        self.admin("GET", &format!("/records/{object}"), serde_json::Value::Null)["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn live(&self, object: &str) -> Vec<serde_json::Value> {
        self.records(object).into_iter().filter(|r| r["IsDeleted"] == serde_json::Value::Bool(false)).collect()
    }

    /// Live Contacts by External_Id__c: (Id, LastName).
    pub fn contacts(&self) -> std::collections::BTreeMap<String, (String, String)> {
        self.live("Contact")
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (text("External_Id__c"), (text("Id"), text("LastName")))
            })
            .collect()
    }

    pub fn counters(&self) -> serde_json::Value {
        self.admin("GET", "/counters", serde_json::Value::Null)
    }

    /// Creates a record through the REST API as the integration user (as another client, or an earlier attempt
    /// of the worker's, would); returns its id.
    pub fn create(&self, object: &str, fields: serde_json::Value) -> String {
        let created = self.rest("POST", &format!("sobjects/{object}"), Some(fields));
        created["id"].as_str().unwrap_or_else(|| panic!("create {object}: {created}")).to_string()
    }

    /// Deletes a record through the REST API (to the recycle bin: `queryAll` still shows it, `IsDeleted`).
    pub fn delete(&self, object: &str, id: &str) {
        self.rest("DELETE", &format!("sobjects/{object}/{id}"), None);
    }

    /// A REST call (`path` under `/services/data/v62.0/`) as the integration user; its JSON answer (null if none).
    pub fn rest(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut token = self
            .agent
            .post(format!("{}/services/oauth2/token", self.ff.url()))
            .send_form([
                ("grant_type", "client_credentials"),
                ("client_id", "pgforce-demo-client"),
                ("client_secret", "pgforce-demo-secret"),
            ])
            .expect("token");
        let token: serde_json::Value = token.body_mut().read_json().expect("token json");
        let url = format!("{}/services/data/v62.0/{path}", token["instance_url"].as_str().unwrap_or_default());
        let auth = format!("Bearer {}", token["access_token"].as_str().unwrap_or_default());
        let r = match (method, body) {
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, b) => self.agent.post(&url).header("Authorization", &auth).send_json(b.unwrap_or_default()),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = r.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}
