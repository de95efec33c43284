//! The listing windows: the exercises run on while the control room lists
//! large scenario folders, or while the same folders are validated on the
//! runtime's workers.

use std::path::Path;
use std::time::Duration;

use metrics_util::debugging::Snapshotter;
use serde_json::{Value, json};
use tokio::time::Instant;

use scip_orchestrator::runtime::service::Service;

use crate::TEAMS;
use crate::common::Spread;
use crate::recorders::take_metrics;

/// `count` large scenario folders in `media` for the listing windows: 10
/// teams, each its own timeline of 1,000 injects (about 4 MB a folder).
pub fn write_packages(media: &Path, count: usize) {
    let body = "Port authorities report an unidentified vessel drifting towards the shipping \
                lane north of the harbour entrance. Coast guard units are on their way.";
    for p in 0..count {
        let folder = media.join(format!("large-{p:02}"));
        std::fs::create_dir_all(folder.join("timelines")).expect("package folder");
        for team in TEAMS {
            let injects: Vec<Value> = (0..1000)
                .map(|i| {
                    json!({"id": format!("{team}-{i:04}"), "time": i, "type": "news",
                           "content": {"headline": format!("Update #{i}"), "body": body}})
                })
                .collect();
            std::fs::write(
                folder.join(format!("timelines/{team}.json")),
                json!({"injects": injects}).to_string(),
            )
            .expect("timeline");
        }
        let teams: Vec<Value> = TEAMS
            .iter()
            .map(|t| json!({"id": t, "timeline_file": format!("timelines/{t}.json")}))
            .collect();
        std::fs::write(
            folder.join("scenario.json"),
            json!({"name": format!("Large {p}"), "duration_minutes": 30, "teams": teams})
                .to_string(),
        )
        .expect("scenario");
    }
}

/// Two more windows of the same length, tick lateness side by side with
/// the quiet one: first the control room's listing of `count` large
/// folders over and over, every folder changed before each listing (so
/// each is read and validated again: the worst case, off the workers, one
/// job at a time), then the same reading and validation done on the
/// runtime's workers, as listing did before it moved off them.
pub async fn listing_windows(
    service: &Service,
    snapshotter: &Snapshotter,
    media: &Path,
    count: usize,
    window: Duration,
    quiet: &[f64],
) {
    let touch = |round: usize| {
        for p in 0..count {
            let file = media.join(format!("large-{p:02}/scenario.json"));
            let mut text = std::fs::read_to_string(&file).expect("scenario");
            text.truncate(text.trim_end().len());
            text.push_str(&" ".repeat(round % 2 + 1));
            std::fs::write(&file, text).expect("scenario");
        }
    };
    let mut rows = vec![(
        "quiet (the window above)".to_owned(),
        quiet.to_vec(),
        0,
        0.0,
    )];
    for on_workers in [false, true] {
        let _ = take_metrics(snapshotter);
        let stop = Instant::now() + window;
        let mut listings = 0;
        let mut spent = Duration::ZERO;
        while Instant::now() < stop {
            touch(listings);
            let t = Instant::now();
            if on_workers {
                // As before: every folder read and validated in a task on
                // the workers, as the request handler did.
                let media = media.to_owned();
                let valid = tokio::spawn(async move {
                    let limits = scip_orchestrator::config::Limits::default();
                    (0..count)
                        .filter(|p| {
                            scip_orchestrator::scenario::load_package(
                                &media.join(format!("large-{p:02}/scenario.json")),
                                &limits,
                                None,
                            )
                            .is_ok()
                        })
                        .count()
                })
                .await
                .expect("the validating task");
                assert_eq!(valid, count, "the large folders are valid");
            } else {
                let listed = service.scenarios().await;
                assert!(
                    listed.iter().filter(|s| s.error.is_none()).count() >= count,
                    "the large folders are valid"
                );
            }
            spent += t.elapsed();
            listings += 1;
        }
        let ticks = take_metrics(snapshotter).ticks;
        let label = if on_workers {
            format!("{count} large folders validated on the workers, over and over")
        } else {
            format!("{count} large folders listed (GET /api/v1/scenarios), over and over")
        };
        let each = spent.as_secs_f64() * 1000.0 / listings.max(1) as f64;
        rows.push((label, ticks, listings, each));
    }
    let base = Spread::of(quiet.iter().copied());
    println!(
        "\n{:<78} {:>7} {:>8} {:>8} {:>8} {:>10}",
        "tick error (ms), engine's stamp", "n", "p50", "p99", "max", "p99 ratio"
    );
    for (label, ticks, listings, each) in &rows {
        let t = Spread::of(ticks.iter().copied());
        let label = if *listings > 0 {
            format!("{label} ({listings} listings, {each:.0} ms each)")
        } else {
            label.clone()
        };
        println!(
            "{label:<78} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>9.2}x",
            t.n,
            t.p50,
            t.p99,
            t.max,
            t.p99 / base.p99
        );
    }
}
