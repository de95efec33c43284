//! MQTT over WebSocket: the handshake (a browser page from an origin
//! BROKER_WS_ORIGINS does not allow is refused; the `mqtt` subprotocol is
//! picked when asked for), then the WebSocket's messages read as a byte
//! stream, served like a TCP connection.

use tokio::net::TcpListener;
use tokio::time::timeout;
use tracing::{debug, info};

use super::{Gate, accept_failed};
use crate::broker::Origins;

/// Largest WebSocket message (or frame) a client may send: browsers
/// publish commands, not injects; what the broker sends them is not
/// limited by this. A WebSocket message is held whole before the gate
/// reads it, so this bounds what a connection costs before its login.
const MAX_WS_MESSAGE: usize = 1024 * 1024;

impl Gate {
    /// Serves MQTT over WebSocket on `listener` (any path, subprotocol
    /// `mqtt`) until the runtime ends. A browser page from an origin the
    /// options do not allow is refused at the handshake (403).
    pub async fn serve_ws(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let gate = self.clone();
                    let seat = self.seat();
                    tokio::spawn(async move {
                        let callback = Handshake {
                            origins: &gate.inner.options.origins,
                        };
                        let config = async_tungstenite::tungstenite::protocol::WebSocketConfig {
                            max_message_size: Some(MAX_WS_MESSAGE),
                            max_frame_size: Some(MAX_WS_MESSAGE),
                            ..Default::default()
                        };
                        let handshake = async_tungstenite::tokio::accept_hdr_async_with_config(
                            stream,
                            callback,
                            Some(config),
                        );
                        match timeout(gate.inner.options.connect_timeout, handshake).await {
                            Ok(Ok(ws)) => {
                                let stream = ws_stream_tungstenite::WsStream::new(ws);
                                gate.connection(stream, peer, seat).await;
                            }
                            Ok(Err(e)) => debug!(%peer, error = %e, "WebSocket handshake failed"),
                            Err(_) => debug!(%peer, "WebSocket handshake timed out"),
                        }
                    });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

/// Answers the WebSocket handshake: refuses a page from an origin the
/// options do not allow (403), and picks the `mqtt` subprotocol when the
/// client asks for it (browser MQTT clients do).
struct Handshake<'a> {
    origins: &'a Origins,
}

impl async_tungstenite::tungstenite::handshake::server::Callback for Handshake<'_> {
    fn on_request(
        self,
        request: &async_tungstenite::tungstenite::handshake::server::Request,
        mut response: async_tungstenite::tungstenite::handshake::server::Response,
    ) -> Result<
        async_tungstenite::tungstenite::handshake::server::Response,
        async_tungstenite::tungstenite::handshake::server::ErrorResponse,
    > {
        let origin = request.headers().get("origin");
        let allowed = match origin {
            None => self.origins.allows(None),
            Some(value) => value
                .to_str()
                .is_ok_and(|origin| self.origins.allows(Some(origin))),
        };
        if !allowed {
            metrics::counter!("scip_broker_refused_total", "action" => "origin").increment(1);
            info!(
                origin = ?origin,
                "MQTT WebSocket refused: a page from an origin not in BROKER_WS_ORIGINS"
            );
            let mut refusal = async_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
                Some("this page's origin may not connect to the broker".to_owned()),
            );
            *refusal.status_mut() = async_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        let asked = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| matches!(*p, "mqtt" | "mqttv3.1"))
            .map(str::to_owned);
        if let Some(protocol) = asked
            && let Ok(value) = protocol.parse()
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use async_tungstenite::tungstenite::handshake::server::{Callback, Request, Response};
    use async_tungstenite::tungstenite::http::HeaderValue;

    use super::Handshake;
    use crate::broker::Origins;

    /// Header names and values of a handshake request.
    type Headers = &'static [(&'static str, &'static [u8])];

    /// The subprotocol the gate picks for a handshake with `headers`, or
    /// the status it refuses with.
    fn handshake(
        origins: &Origins,
        headers: &[(&'static str, &[u8])],
    ) -> Result<Option<String>, u16> {
        let mut request = Request::builder().uri("/mqtt").body(()).unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        match (Handshake { origins }).on_request(&request, Response::new(())) {
            Ok(response) => Ok(response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned())),
            Err(refusal) => Err(refusal.status().as_u16()),
        }
    }

    #[test]
    fn a_page_from_another_origin_is_refused_and_mqtt_is_picked() {
        let own = Origins::parse(["http://127.0.0.1:8080"]).unwrap();
        let check = |origins: &Origins, headers: Headers, expected: Result<Option<&str>, u16>| {
            let expected = expected.map(|p| p.map(str::to_owned));
            assert_eq!(handshake(origins, headers), expected, "{headers:?}");
        };
        check(&Origins::Any, &[], Ok(None));
        check(
            &Origins::Any,
            &[("origin", b"http://evil.example")],
            Ok(None),
        );
        check(&own, &[], Ok(None));
        check(&own, &[("origin", b"http://127.0.0.1:8080")], Ok(None));
        check(&own, &[("origin", b"http://evil.example")], Err(403));
        check(&own, &[("origin", b"null")], Err(403));
        check(&own, &[("origin", b"\xff")], Err(403));
        check(
            &own,
            &[
                ("origin", b"http://evil.example"),
                ("sec-websocket-protocol", b"mqtt"),
            ],
            Err(403),
        );
        check(
            &own,
            &[("sec-websocket-protocol", b"mqtt")],
            Ok(Some("mqtt")),
        );
        check(
            &own,
            &[("sec-websocket-protocol", b"wamp, mqttv3.1")],
            Ok(Some("mqttv3.1")),
        );
        check(
            &own,
            &[
                ("sec-websocket-protocol", b"wamp"),
                ("sec-websocket-protocol", b"mqtt"),
            ],
            Ok(Some("mqtt")),
        );
        check(&own, &[("sec-websocket-protocol", b"mqttv5")], Ok(None));
    }
}
