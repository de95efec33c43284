//! The sample's media as `demo` serves them: a file for every media
//! reference of its injects, the one built into the binary.

use std::collections::BTreeSet;

use serde_json::Value;

use scip_orchestrator::app::{SAMPLE_FILES, SAMPLE_MEDIA};
use scip_orchestrator::scenario::media::references;
use scip_orchestrator::testing::on_free_ports;

use crate::demo::{EXERCISE, start_demo};
use crate::support::DemoPorts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_file_for_every_media_reference_of_the_sample() {
    // Each media reference of the sample's timelines, as the dashboards
    // ask for it (`four-teams/x.png`).
    let mut wanted = BTreeSet::new();
    for (path, text) in &SAMPLE_FILES[1..] {
        let timeline: Value = serde_json::from_str(text).unwrap();
        for (written, path_asked) in references(&timeline) {
            if written.starts_with("/media/") {
                wanted.insert(path_asked);
            }
        }
        assert!(!wanted.is_empty(), "{path}");
    }
    // Every picture, clip and attachment built in is one of them.
    let names = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .map(|p| p.rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    let built_in: BTreeSet<String> = SAMPLE_MEDIA
        .iter()
        .map(|(path, _)| path.strip_prefix("media/").unwrap().to_owned())
        .collect();
    assert_eq!(names(&wanted), built_in);

    let dir = tempfile::tempdir().unwrap();
    let demo = on_free_ports(|ports| start_demo(&DemoPorts::from(ports), dir.path(), "1"));
    let signed_in = demo.url("control room:");
    let (base, token) = signed_in.split_once("#token=").expect("a token");
    let client = reqwest::Client::new();
    for path in &wanted {
        // The control room's way in: the API token in the address.
        let url = format!("{base}exercises/{EXERCISE}/media/{path}?access_token={token}");
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let name = path.rsplit('/').next().unwrap();
        let (_, bytes) = SAMPLE_MEDIA
            .iter()
            .find(|(p, _)| p.strip_prefix("media/") == Some(name))
            .unwrap();
        assert_eq!(&response.bytes().await.unwrap()[..], *bytes, "{url}");
    }
    let (status, stderr) = demo.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}
