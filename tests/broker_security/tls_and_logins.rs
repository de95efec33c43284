//! The engine's login over TLS to Mosquitto, and the clear start-up errors
//! of a wrong password, a certificate from another CA and a CA file
//! without one.

use std::path::{Path, PathBuf};

use crate::support::{
    Client, Seen, broker_acl, engine, granted, secured_mosquitto, start_up_error, write_scenario,
};

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost:
/// `ca.pem`, `server.pem`, `server.key` in `dir`.
fn write_certificates(dir: &Path, name: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

pub async fn engine_logs_in_over_tls_and_its_team_reads_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("scenario"), "sec-tls");
    let users = broker_acl("sec-tls", &scenario, &dir.path().join("acl"));
    let ca = write_certificates(&dir.path().join("certs"), "good");
    let broker = secured_mosquitto(
        "sec-tls",
        &dir.path().join("acl"),
        Some(&dir.path().join("certs")),
    );
    let mut blue = Client::connect(
        broker.port,
        Some(("sec-tls-blue", &users["sec-tls-blue"])),
        Some(&ca),
    )
    .await
    .unwrap();
    assert!(granted(
        blue.subscribe("/exercise/sec-tls/team/blue/feed").await
    ));

    let password_file = dir.path().join("acl/sec-tls.engine-password");
    let ca_arg = ca.to_str().unwrap();
    let pw_arg = password_file.to_str().unwrap();
    let _engine = engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", ca_arg),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    );
    let seen = blue.wait_for(|topic, _| topic.ends_with("/feed")).await;
    let Some(Seen::Message(topic, inject)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(topic, "/exercise/sec-tls/team/blue/feed");
    assert_eq!(inject["team_id"], "blue");
    assert_eq!(inject["id"], "blue-0");

    // A wrong password is a clear start-up error naming the settings.
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", ca_arg),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD", "not-the-password"),
        ],
    ))
    .await;
    assert!(
        err.contains("refused the login \"sec-tls-engine\""),
        "{err}"
    );
    assert!(err.contains("MQTT_USERNAME"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    // So is a broker certificate from another CA.
    let other_ca = write_certificates(&dir.path().join("other"), "other");
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", other_ca.to_str().unwrap()),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    ))
    .await;
    assert!(err.contains("TLS with the MQTT broker"), "{err}");
    assert!(err.contains("MQTT_CA_FILE"), "{err}");

    // And a CA file that holds no certificate.
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", scenario.to_str().unwrap()),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    ))
    .await;
    assert!(err.contains("MQTT_CA_FILE"), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
}
