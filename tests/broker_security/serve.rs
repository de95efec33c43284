//! `serve` with the `broker-acl` files: the embedded broker holds the teams
//! to them, wrong settings stop the start, and SIGHUP reads them again.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::support::{
    BIN, Client, Seen, WAIT, broker_acl, granted, start_up_error, write_scenario,
};

/// `serve` with BROKER_PASSWORD_FILE and BROKER_ACL_FILE: the embedded
/// broker holds the teams to the `broker-acl` files while the engine (its
/// own login) runs the exercise; wrong settings are start-up errors.
pub async fn serve_holds_teams_to_the_acl_file() {
    use scip_orchestrator::testing::on_free_ports_async;

    let ex = "sec-serve";
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("media/room"), ex);
    let acl_dir = dir.path().join("acl");
    let users = broker_acl(ex, &scenario, &acl_dir);
    let file = |suffix: &str| acl_dir.join(format!("{ex}.{suffix}"));
    let admin = "scip_sec-serve-admin-token";
    let serve = |[http, port, ws_port]: [u16; 3], env: &[(&str, &Path)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--http-bind", &format!("127.0.0.1:{http}")])
            .args(["--broker-port", &port.to_string()])
            .args(["--broker-ws-port", &ws_port.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "API_TOKENS",
                format!("admin:{}", scip_orchestrator::access::tokens::hash(admin)),
            )
            .env("MEDIA_STORAGE_PATH", dir.path().join("media"))
            .env("MQTT_USERNAME", format!("{ex}-engine"))
            .env("MQTT_PASSWORD_FILE", file("engine-password"))
            .env_remove("MQTT_BROKER_HOST")
            .env_remove("MQTT_PASSWORD")
            .env_remove("BROKER_PASSWORD_FILE")
            .env_remove("BROKER_ACL_FILE")
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };

    // Ports drawn again should another process take one before serve binds it.
    let refused = async |env: &[(&str, &Path)]| {
        on_free_ports_async(async |ports| {
            let err = start_up_error(serve(ports, env)).await;
            (!err.contains(" is taken: ")).then_some(err)
        })
        .await
    };
    // An ACL without a password file, and a broken ACL, stop the start.
    let err = refused(&[("BROKER_ACL_FILE", &file("acl"))]).await;
    assert!(
        err.contains("BROKER_ACL_FILE needs BROKER_PASSWORD_FILE"),
        "{err}"
    );
    let broken = dir.path().join("broken.acl");
    std::fs::write(&broken, "user a\ntopic read /x\nallow everything\n").unwrap();
    let err = refused(&[
        ("BROKER_PASSWORD_FILE", &file("passwd")),
        ("BROKER_ACL_FILE", &broken),
    ])
    .await;
    assert!(err.contains("line 3 of"), "{err}");
    assert!(err.contains("unknown keyword \"allow\""), "{err}");

    let (served, mut log, [http, port, _]) = on_free_ports_async(async |ports| {
        let mut served = serve(
            ports,
            &[
                ("BROKER_PASSWORD_FILE", &file("passwd")),
                ("BROKER_ACL_FILE", &file("acl")),
            ],
        );
        // Its log lines, to wait on the SIGHUP reloads below.
        let mut log = {
            use tokio::io::AsyncBufReadExt;
            let (tx, rx) = mpsc::unbounded_channel::<String>();
            let mut lines = tokio::io::BufReader::new(served.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        // Logged once every port is bound; the end instead when one was taken.
        let mut before = String::new();
        let listening = timeout(WAIT, async {
            while let Some(line) = log.recv().await {
                if line.contains("embedded MQTT broker listening") {
                    return true;
                }
                before.push_str(&line);
                before.push('\n');
            }
            false
        })
        .await
        .expect("serve starts its broker");
        match listening {
            true => Some((served, log, ports)),
            false if before.contains(" is taken: ") => None,
            false => panic!("serve ended at start:\n{before}"),
        }
    })
    .await;
    let api = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + WAIT;
    while !reqwest::get(format!("{api}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "serve not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blue_user = format!("{ex}-blue");
    let mut blue = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(granted(blue.subscribe(&format!("/exercise/{ex}/#")).await));
    assert!(!granted(
        blue.subscribe(&format!("/exercise/{ex}/control")).await
    ));
    let http_client = reqwest::Client::new();
    for (path, body) in [
        ("/api/v1/exercises".to_owned(), json!({"scenario": "room"})),
        (format!("/api/v1/exercises/{ex}/start"), json!({})),
    ] {
        let r = http_client
            .post(format!("{api}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    // The team follows its own feed; red's injects, due at the same
    // seconds, never reach it.
    let seen = blue
        .wait_for(|t, m| t.ends_with("/team/blue/feed") && m["id"] == "blue-2")
        .await;
    assert!(
        seen.iter()
            .all(|Seen::Message(t, _)| !t.contains("/team/red/") && !t.ends_with("/control")),
        "{seen:?}"
    );

    // SIGHUP reads the files again. A broken ACL is logged and changes
    // nothing; a good one applies to new connections.
    let hangup = |child: &Child| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let good_acl = std::fs::read_to_string(file("acl")).unwrap();
    std::fs::write(file("acl"), format!("{good_acl}\nallow all\n")).unwrap();
    hangup(&served);
    let line = logged(&mut log, "broker files not reloaded").await;
    assert!(line.contains("unknown keyword"), "{line}");
    let mut again = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(granted(
        again
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
    // Blue's rules gone: its next connection may read nothing.
    let without_blue: String = good_acl
        .split("\n\n")
        .filter(|block| !block.contains(&format!("user {blue_user}\n")))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert_ne!(without_blue, good_acl);
    std::fs::write(file("acl"), without_blue).unwrap();
    hangup(&served);
    logged(&mut log, "broker password and ACL files read again").await;
    let mut after = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(!granted(
        after
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
    // The controller's rules still hold.
    let controller = format!("{ex}-controller");
    let mut controller = Client::connect(port, Some((&controller, &users[&controller])), None)
        .await
        .unwrap();
    assert!(granted(
        controller
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
}

/// The first line of `log` that contains `needle`; panics after WAIT.
async fn logged(log: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    timeout(WAIT, async {
        while let Some(line) = log.recv().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the log ended before {needle:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the log"))
}
