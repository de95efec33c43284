//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`). Missing, they fail the test: install them with
//! `apt-get install -y chromium chromium-driver` (`.ci/run` does).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use scip_orchestrator::testing::on_free_ports_async;

/// A request a page made, as the browser's network log has it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    /// None: not answered (yet), or cancelled.
    pub status: Option<u16>,
}

/// One browser: its own chromedriver, Chromium and profile.
pub struct Browser {
    pub client: Client,
    /// chromedriver's own address, for what WebDriver has no command for.
    driver_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let driver_path = find("CHROMEDRIVER", "chromedriver");
        let chromium = find("CHROMIUM", "chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir(&downloads).expect("downloads dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1440,1000",
                    "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // Downloads go to `downloads()`, without asking.
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            }),
        );
        // Stop and reset ask for confirmation: the tests confirm.
        caps.insert("unhandledPromptBehavior".into(), json!("accept"));
        // The console, to find Content-Security-Policy violations and
        // errors; the network (as DevTools sees it), for each answer's status.
        caps.insert(
            "goog:loggingPrefs".into(),
            json!({"browser": "ALL", "performance": "ALL"}),
        );
        // chromedriver on a free port; should another process take it
        // first, chromedriver exits and starts again on another.
        let (driver, url, client) = on_free_ports_async(async |[port]| {
            let mut driver = Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                let session = ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await;
                // Ended: its port was taken, and a session there is not ours.
                if driver.try_wait().expect("chromedriver's status").is_some() {
                    if let Ok(client) = session {
                        let _ = client.close().await;
                    }
                    return None;
                }
                match session {
                    Ok(client) => return Some((driver, url, client)),
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        // chromedriver is still starting.
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("no WebDriver session from {}: {e}", driver_path.display()),
                }
            }
        })
        .await;
        Self {
            client,
            driver_url: url,
            driver,
            _profile: profile,
        }
    }

    /// The browser console's messages since the last call.
    pub async fn console(&self) -> Vec<String> {
        self.console_entries()
            .await
            .into_iter()
            .map(|(_, message)| message)
            .collect()
    }

    /// The browser console's entries since the last call, each with its
    /// level (`SEVERE` for errors, failed loads included).
    pub async fn console_entries(&self) -> Vec<(String, String)> {
        self.log("browser")
            .await
            .iter()
            .map(|e| {
                let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                (text("level"), text("message"))
            })
            .collect()
    }

    /// The requests the pages made since the last call, in order, each with
    /// the status it was answered with (None: no answer, or cancelled).
    pub async fn network(&self) -> Vec<Exchange> {
        let mut exchanges: Vec<(String, Exchange)> = Vec::new();
        for entry in self.log("performance").await {
            let event: Value = serde_json::from_str(entry["message"].as_str().unwrap_or("{}"))
                .expect("a DevTools event");
            let (method, params) = (&event["message"]["method"], &event["message"]["params"]);
            let id = params["requestId"].as_str().unwrap_or_default().to_owned();
            match method.as_str() {
                Some("Network.requestWillBeSent") => {
                    let request = &params["request"];
                    exchanges.push((
                        id,
                        Exchange {
                            method: request["method"].as_str().unwrap_or_default().to_owned(),
                            url: request["url"].as_str().unwrap_or_default().to_owned(),
                            status: None,
                        },
                    ));
                }
                Some("Network.responseReceived") => {
                    let status = params["response"]["status"].as_u64();
                    if let Some((_, exchange)) =
                        exchanges.iter_mut().rev().find(|(other, _)| *other == id)
                    {
                        exchange.status = status.and_then(|s| u16::try_from(s).ok());
                    }
                }
                _ => {}
            }
        }
        exchanges.into_iter().map(|(_, e)| e).collect()
    }

    /// chromedriver's log of `kind` since the last call (its own endpoint,
    /// which WebDriver itself lacks).
    async fn log(&self, kind: &str) -> Vec<Value> {
        let session = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let response = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": kind}))
            .send()
            .await
            .expect("chromedriver answers");
        let body: Value = response.json().await.expect("a JSON log");
        body["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no log entries in {body}"))
            .clone()
    }

    /// Panics if the console reported a Content-Security-Policy violation
    /// since the last look: the pages' policy must not break them.
    pub async fn assert_no_policy_violations(&self, page: &str) {
        let violations: Vec<String> = self
            .console()
            .await
            .into_iter()
            .filter(|m| m.contains("Content Security Policy"))
            .collect();
        assert!(violations.is_empty(), "{page}: {violations:#?}");
    }

    /// Where this browser saves downloads.
    pub fn downloads(&self) -> PathBuf {
        self._profile.path().join("downloads")
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// A new browser on a team dashboard, once its stream is live.
    pub async fn on_live_dashboard(url: &str, within: Duration) -> Self {
        let browser = Self::start().await;
        browser.open(url).await;
        browser
            .wait(
                "the stream is live",
                "document.querySelector('#connection').dataset.status === 'live'",
                within,
            )
            .await;
        browser
    }

    /// Polls `expression` until it is truthy and returns its value; panics
    /// after `within`, naming `what` and the last value.
    pub async fn wait(&self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let script = format!("return ({expression});");
        loop {
            let value = self.eval(&script).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not so within {within:?}; last value {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        // Out of a sticky header's way, as a user would scroll to it.
        let selector = serde_json::to_string(css).expect("a string");
        self.eval(&format!(
            "const e = document.querySelector({selector}); if (e) e.scrollIntoView({{block: 'center'}}); return true"
        ))
        .await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Saves a PNG of the window to `$SCREENSHOTS_DIR/<name>.png`, when set
    /// (how the README's pictures are made).
    pub async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("SCREENSHOTS_DIR") {
            let png = self.client.screenshot().await.expect("screenshot");
            let path = PathBuf::from(dir).join(format!("{name}.png"));
            std::fs::write(&path, png).expect("write screenshot");
        }
    }

    /// Ends the session (Chromium exits), then chromedriver.
    pub async fn quit(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never quit: Chromium would outlive its
        // driver. Its profile path names its processes.
        let profile = self._profile.path().display().to_string();
        let _ = Command::new("pkill")
            .args(["-f", &format!("user-data-dir={profile}")])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = PathBuf::from(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: the browser tests need Debian's chromium and chromium-driver \
         (apt-get install -y chromium chromium-driver), or ${env} set to its path"
    );
}
