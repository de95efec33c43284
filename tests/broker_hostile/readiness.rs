//! `serve` on the embedded broker: hostile ids through the gate, the
//! WebSocket listener's origins, and `/readyz` once rumqttd stops accepting.

use std::time::Duration;

use rumqttc::mqttbytes::v4::{Connect, Packet};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use scip_orchestrator::testing::on_free_ports_async;

use crate::support::{ACCEPTED, WAIT, connect_packet, encode, raw};

/// `serve` on the embedded broker: the client ids that used to stop
/// rumqttd go through the gate harmlessly, a client with keep-alive 0
/// connects, and should rumqttd stop accepting connections all the same
/// (here: the same ids sent to rumqttd directly, past the gate, with the
/// engine's login), `/readyz` says so.
pub async fn serve_turns_unready_when_the_broker_stops_accepting() {
    use rumqttc::mqttbytes::v4::Login;
    use tokio::io::AsyncBufReadExt;

    const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
    let dir = tempfile::tempdir().unwrap();
    // Ports drawn again should another process take one before serve binds it.
    let (mut serve, mut lines, [http, port, ws_port], internal) =
        on_free_ports_async(async |[http, port, ws_port]| {
            let mut serve = tokio::process::Command::new(BIN)
                .arg("serve")
                .args(["--http-bind", &format!("127.0.0.1:{http}")])
                .args(["--broker-port", &port.to_string()])
                .args(["--broker-ws-port", &ws_port.to_string()])
                .arg("--data-dir")
                .arg(dir.path())
                .env("MQTT_USERNAME", "engine")
                .env("MQTT_PASSWORD", "engine-secret")
                .env("LOG_FORMAT", "text")
                .env("RUST_LOG", "info")
                .env_remove("MQTT_BROKER_HOST")
                .env_remove("MQTT_PASSWORD_FILE")
                .env_remove("BROKER_PASSWORD_FILE")
                .env_remove("BROKER_ACL_FILE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = tokio::io::BufReader::new(serve.stderr.take().unwrap()).lines();
            // Logged once every port is bound; the end instead when one was taken.
            let internal: Result<u16, String> = timeout(WAIT, async {
                let mut log = String::new();
                while let Some(line) = lines.next_line().await.unwrap() {
                    if let Some(at) = line.find("internal=127.0.0.1:") {
                        let rest = &line[at + "internal=127.0.0.1:".len()..];
                        return Ok(rest
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap());
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
                Err(log)
            })
            .await
            .expect("serve logs where rumqttd listens");
            match internal {
                Ok(internal) => Some((serve, lines, [http, port, ws_port], internal)),
                Err(log) if log.contains(" is taken: ") => None,
                Err(log) => panic!("serve ended without naming the broker's internal port:\n{log}"),
            }
        })
        .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    let status = || async {
        reqwest::get(&readyz)
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    let deadline = Instant::now() + WAIT;
    while status().await != Some(200) {
        assert!(Instant::now() < deadline, "serve not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Through the gate, as any client would: each id twice, then business
    // as usual.
    let login = |id: &str| {
        let mut c = connect_packet(id, 30, true);
        c.login = Some(Login::new("engine", "engine-secret"));
        c
    };
    for id in ["a/b", "a+b", "$x"] {
        for _ in 0..2 {
            let (_stream, connack) = raw(port, login(id)).await;
            assert_eq!(connack, ACCEPTED, "client id {id:?}");
        }
    }
    let mut opts = MqttOptions::new("keep-alive-zero", "127.0.0.1", port);
    opts.set_keep_alive(Duration::ZERO)
        .set_credentials("engine", "engine-secret");
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let connack = timeout(WAIT, eventloop.poll()).await.expect("an answer");
    assert!(
        matches!(&connack, Ok(Event::Incoming(Incoming::ConnAck(c))) if c.code == rumqttc::ConnectReturnCode::Success),
        "keep-alive 0: {connack:?}"
    );
    assert_eq!(status().await, Some(200), "ready after the hostile ids");

    // The WebSocket listener lets in pages of the service's own origin and
    // clients that are not browsers (no Origin), not a page of another site.
    for (origin, allowed) in [
        (Some("http://evil.example"), false),
        (Some("null"), false),
        (Some(format!("http://127.0.0.1:{http}")).as_deref(), true),
        (Some(format!("http://localhost:{http}")).as_deref(), true),
        (None, true),
    ] {
        let answer = websocket_connect(ws_port, origin, login("browser")).await;
        match allowed {
            true => assert_eq!(answer, Ok(ACCEPTED.to_vec()), "origin {origin:?}"),
            false => assert_eq!(answer, Err(403), "origin {origin:?}"),
        }
    }

    // Past the gate: rumqttd itself takes the id once without an answer,
    // then panics on the second and refuses every connection after.
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", internal)).await.unwrap();
        stream
            .write_all(&encode(Packet::Connect(login("a/b"))))
            .await
            .unwrap();
        let mut sink = [0u8; 4];
        let _ = timeout(Duration::from_millis(500), stream.read(&mut sink)).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let response = reqwest::get(&readyz).await.unwrap();
        if response.status() == 503 {
            let body = response.text().await.unwrap();
            assert!(body.contains("embedded MQTT broker"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says ready while the broker refuses every connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.start_kill().unwrap();
}

/// A CONNECT over the WebSocket listener with `origin`: the CONNACK's
/// bytes, or the handshake's HTTP status when refused.
async fn websocket_connect(
    port: u16,
    origin: Option<&str>,
    connect: Connect,
) -> Result<Vec<u8>, u16> {
    use async_tungstenite::tungstenite::Message;
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use futures_util::{SinkExt, StreamExt};

    let mut request = format!("ws://127.0.0.1:{port}/mqtt")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (mut ws, _) = match async_tungstenite::tokio::connect_async(request).await {
        Ok(connected) => connected,
        Err(async_tungstenite::tungstenite::Error::Http(response)) => {
            return Err(response.status().as_u16());
        }
        Err(e) => panic!("WebSocket handshake: {e}"),
    };
    ws.send(Message::Binary(encode(Packet::Connect(connect))))
        .await
        .unwrap();
    match timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(bytes)))) => Ok(bytes.to_vec()),
        other => panic!("no CONNACK over WebSocket: {other:?}"),
    }
}
