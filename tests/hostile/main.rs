//! Hostile input that fuzzing (`fuzz/`, README "Fuzzing") or an attack
//! found to crash or mislead the program: one test per finding, kept as a
//! regression. Each fuzzing input is also a seed of the fuzz target that
//! found it.

use serde_json::{Value, json};

use scip_orchestrator::config::Limits;
use scip_orchestrator::scenario::{load_inline, to_inline};

/// An upload without a duration whose one inject is at `time`.
fn undated(time: u64, turn_based: bool) -> Value {
    let mut inject = json!({"id": "a", "time": time, "type": "news", "content": {}});
    if turn_based {
        inject["turn"] = json!(1);
    }
    json!({
        "turn_based": turn_based,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": [inject]}],
    })
}

/// Without a duration the exercise ends on the whole minute after its last
/// inject, `(last + 60).div_ceil(60) * 60` in `Header::finish`: for a last
/// inject after 4,294,967,220 s that overflowed, a panic in debug builds and,
/// in release, a 60-second exercise with an inject due 136 years later.
/// Found by `scenario_value`.
#[test]
fn a_huge_inject_time_without_a_duration_is_refused() {
    for time in [
        4_294_967_221,
        4_294_967_235,
        4_294_967_236,
        u64::from(u32::MAX),
    ] {
        for turn_based in [false, true] {
            let result = load_inline(&undated(time, turn_based), &Limits::default());
            let Err(errors) = result else {
                panic!("time {time} (turn-based: {turn_based}): accepted");
            };
            assert!(
                errors.iter().any(|e| e.reason.contains("over the limit")),
                "time {time} (turn-based: {turn_based}): {errors:?}"
            );
        }
    }
}

/// A turn-based upload without `total_turns` took any `turn` up to 65535,
/// but `to_inline` writes the count as `total_turns`, which loading allows
/// only up to 1000: the form the service stores could not be loaded back, so
/// such an exercise was not restored after a restart. A turn over 1000 is
/// now refused with or without `total_turns`, and accepted scenarios load
/// back from their stored form. Found by `scenario_value`.
#[test]
fn a_turn_based_scenario_loads_back_from_its_stored_form() {
    for turn in [1, 1000, 1001, 65535] {
        let package = json!({
            "turn_based": true,
            "duration_minutes": 120,
            "teams": [{"id": "blue", "timeline_id": "t"}],
            "timelines": [{"id": "t", "injects": [
                {"id": "a", "time": 0, "turn": turn, "type": "news", "content": {}},
            ]}],
        });
        let scenario = match load_inline(&package, &Limits::default()) {
            Ok(scenario) => scenario,
            Err(errors) => {
                assert!(turn > 1000, "turn {turn} refused: {errors:?}");
                assert!(
                    errors[0].to_string().contains("from 1 to 1000"),
                    "turn {turn}: {errors:?}"
                );
                continue;
            }
        };
        assert!(turn <= 1000, "turn {turn} accepted");
        let stored = to_inline(&scenario);
        let again = load_inline(&stored, &Limits::default())
            .unwrap_or_else(|errors| panic!("turn {turn}: {errors:?}"));
        assert_eq!(again.turns, scenario.turns, "turn {turn}");
    }
}

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// `dir` as a `.tar.gz`, its files at the archive's top.
fn archive(dir: &std::path::Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    builder.append_dir_all("", dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Archives built to blow up memory: a JSON file over the limit inside the
/// archive, a PAX header and a long name claiming gigabytes, a header
/// claiming more than the stream holds, and a file of nothing but `0,`
/// under the limit. Each is refused, and the process's peak resident
/// memory stays far below what parsing them would take.
#[test]
fn an_archive_cannot_blow_up_memory() {
    let root = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_file_bytes: 32 << 20,
        ..Limits::default()
    };
    let import = |body: Vec<u8>| match scip_orchestrator::scenario::package::import_archive(
        &body,
        root.path(),
        Some("bomb"),
        true,
        &limits,
    ) {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    };

    // 80 MiB of JSON in an archive of a few hundred KB, over the 32 MiB
    // limit set above.
    let body = {
        let mut json = Vec::from(&b"{\"teams\": ["[..]);
        json.resize(80 << 20, b' ');
        json.extend_from_slice(b"]}");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::best(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "scenario.json", json.as_slice())
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    };
    assert!(body.len() < 1 << 20, "{}", body.len());
    let reply = import(body);
    assert!(reply.contains("MAX_SCENARIO_FILE_BYTES"), "{reply}");

    // A PAX header claiming 2 GiB of zeros.
    let reply = import(bomb_header(tar::EntryType::XHeader));
    assert!(reply.contains("archive header"), "{reply}");
    // A GNU long name claiming 2 GiB.
    let reply = import(bomb_header(tar::EntryType::GNULongName));
    assert!(reply.contains("archive header"), "{reply}");

    // A file whose header claims far more than the stream holds.
    let mut header = tar::Header::new_gnu();
    header.set_size(1 << 40);
    header.set_mode(0o644);
    header.set_cksum();
    let mut raw = header.as_bytes().to_vec();
    raw[..4].copy_from_slice(b"big\0");
    let mut fixed = tar::Header::from_byte_slice(&raw).clone();
    fixed.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, fixed.as_bytes()).unwrap();
    std::io::Write::write_all(&mut gz, &[0u8; 4096]).unwrap();
    let reply = import(gz.finish().unwrap());
    assert!(
        reply.contains("cut short") || reply.contains("unpacks to more"),
        "{reply}"
    );

    // 30 MiB of `0,`: under the byte limit, but fifteen million values.
    let zeros = {
        let mut json = Vec::from(
            &b"{\"teams\": [{\"id\": \"blue\", \"timeline_file\": \"t.json\"}], \"x\": ["[..],
        );
        while json.len() < 30 << 20 {
            json.extend_from_slice(b"0,");
        }
        json.extend_from_slice(b"0]}");
        json
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.json"), &zeros).unwrap();
    std::fs::write(dir.path().join("t.json"), "{\"injects\": []}").unwrap();
    let reply = import(archive(dir.path()));
    assert!(reply.contains("JSON values"), "{reply}");

    // Parsed whole, the zeros alone would take over 450 MiB.
    let peak = resident();
    assert!(peak < 400 << 20, "peak resident memory {} MiB", peak >> 20);
}

/// An archive whose first entry is a header of `kind` claiming 2 GiB (of
/// zeros, a few MB compressed; the stream ends early).
fn bomb_header(kind: tar::EntryType) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_size(2 << 30);
    header.set_entry_type(kind);
    header.set_path("././@header").unwrap();
    header.set_mode(0o644);
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
    }
    gz.finish().unwrap()
}
