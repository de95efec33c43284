//! The binary as a user runs it: a `demo` or `serve` process of our own,
//! and the three ports it binds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scip_orchestrator::testing::Lines;

pub const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");

/// A `demo` or `serve` process of our own, its stdout read line by line.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    pub stderr: Lines,
    /// When it was started.
    pub spawned: Instant,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, &[])
    }

    /// The binary with `args` and the variables `env` (the ports' others
    /// removed).
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let spawned = Instant::now();
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("MQTT_BROKER_HOST")
            .env_remove("MEDIA_STORAGE_PATH")
            .env_remove("RUST_LOG")
            .env_remove("HTTP_BIND")
            .env_remove("BROKER_PORT")
            .env_remove("BROKER_WS_PORT")
            .env_remove("DEMO_DEFAULT_PORTS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Lines::read(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            spawned,
        }
    }

    /// Reads stdout until a line contains `ready` (true), or the process
    /// ends first (false); panics after 20 s.
    pub fn started(&mut self, ready: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let done = line.contains(ready);
                    self.stdout.push(line);
                    if done {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(e) => panic!(
                    "no line with {ready:?} within 20 s ({e}); stdout:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// The lines read from stdout so far.
    pub fn stdout(&self) -> &[String] {
        &self.stdout
    }

    /// The URL on the banner line labelled `label`.
    pub fn url(&self, label: &str) -> String {
        self.stdout
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stdout.join("\n")))
            .trim()
            .to_owned()
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn terminate(self) -> (ExitStatus, String) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        self.finish()
    }

    /// Waits for the exit; the exit status and stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let err = self.stderr.until_closed(Duration::from_secs(20)).join("\n");
        (status, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct DemoPorts {
    pub http: u16,
    pub mqtt: u16,
    pub ws: u16,
}

impl DemoPorts {
    pub fn from([http, mqtt, ws]: [u16; 3]) -> Self {
        Self { http, mqtt, ws }
    }
}

/// `GET {url}` with an API token, as JSON; panics unless 2xx.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}
