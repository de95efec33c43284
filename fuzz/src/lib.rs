//! Shared by the fuzz targets: what an accepted scenario must satisfy, and a
//! generator of scenario-shaped JSON for the structured target.
//!
//! The targets' property is "no panic, no hang, no runaway memory"; for a
//! scenario the loaders accept, it also includes what the rest of the
//! program relies on without checking again: every inject is due within the
//! exercise, the limits hold, and [`to_inline`] (the form the service stores
//! and restores after a restart) loads back into the same scenario.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

use scip_orchestrator::config::Limits;
use scip_orchestrator::scenario::{Scenario, load_inline, summary, to_inline};

/// A folder for this process's files, in memory when the machine has
/// /dev/shm, removed when the process exits normally (libFuzzer ends with
/// `exit`, which runs no destructors of statics).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        dir
    } else {
        builder.tempdir().expect("a temp dir")
    };
    let path = dir.keep();
    remove_at_exit(path.clone());
    path
}

fn remove_at_exit(path: PathBuf) {
    static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static REGISTER: Once = Once::new();
    extern "C" fn remove_all() {
        if let Ok(paths) = PATHS.lock() {
            for path in paths.iter() {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
    PATHS.lock().unwrap_or_else(|e| e.into_inner()).push(path);
    // SAFETY: `remove_all` is a plain function that stays valid for the
    // whole process and does not unwind.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
}

/// Loads `value` as an inline upload (`POST /exercises {"package": ...}`) and,
/// when it is accepted, checks it with [`check_accepted`].
pub fn check_inline(value: &Value, limits: &Limits) {
    let loaded = load_inline(value, limits);
    if verbose() {
        eprintln!("{value}");
    }
    outcome(loaded.as_ref().map_err(Vec::len));
    if let Ok(scenario) = loaded {
        check_accepted(&scenario, limits);
    }
}

/// With `SCIP_FUZZ_VERBOSE` set, says on stderr whether a scenario was
/// accepted (to see what a corpus file stands for).
pub fn outcome(loaded: std::result::Result<&Scenario, usize>) {
    if !verbose() {
        return;
    }
    match loaded {
        Ok(scenario) => eprintln!(
            "accepted: {} teams, {} deliveries, {} s",
            scenario.teams.len(),
            scenario.delivery_count(),
            scenario.duration.get()
        ),
        Err(errors) => eprintln!("refused: {errors} errors"),
    }
}

/// `SCIP_FUZZ_VERBOSE` is set: the targets describe each input on stderr.
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("SCIP_FUZZ_VERBOSE").is_some())
}

/// What every accepted scenario must satisfy; panics (a finding) otherwise.
pub fn check_accepted(scenario: &Scenario, limits: &Limits) {
    let _ = summary(scenario);
    let duration = scenario.duration.get();
    assert!(
        (1..=limits.max_duration_secs).contains(&duration),
        "accepted duration {duration} s is outside 1..={} s",
        limits.max_duration_secs
    );
    assert!(
        !scenario.teams.is_empty(),
        "accepted a scenario without teams"
    );
    assert!(
        scenario.teams.len() <= limits.max_teams,
        "accepted {} teams, the limit is {}",
        scenario.teams.len(),
        limits.max_teams
    );
    for team in &scenario.teams {
        let injects = &team.timeline.injects;
        assert!(
            injects.len() <= limits.max_injects_per_timeline,
            "accepted {} injects in a timeline, the limit is {}",
            injects.len(),
            limits.max_injects_per_timeline
        );
        for inject in injects {
            if let Some(turns) = &scenario.turns {
                let turn = inject.turn().unwrap_or_else(|| {
                    panic!("inject {} of a turn-based scenario has no turn", inject.id)
                });
                assert!(
                    turn <= turns.total(),
                    "inject {} is in turn {turn} of {}",
                    inject.id,
                    turns.total()
                );
            }
            let due = scenario.due(inject).get();
            assert!(
                due <= duration,
                "accepted inject {} due at {due} s, after the end of the exercise ({duration} s)",
                inject.id
            );
        }
    }
    let _ = scenario.delivery_count();

    let stored = to_inline(scenario);
    let again = load_inline(&stored, limits).unwrap_or_else(|errors| {
        panic!("to_inline's form of an accepted scenario does not load back: {errors:?}")
    });
    assert_same(scenario, &again);
}

/// `a` and `b` are the same scenario, as far as a [`Scenario`] goes (paths and
/// timeline ids aside, which `to_inline` does not keep).
fn assert_same(a: &Scenario, b: &Scenario) {
    assert_eq!(a.exercise_id, b.exercise_id, "exercise id changed");
    assert_eq!(a.scenario_id, b.scenario_id, "scenario_id changed");
    assert_eq!(a.name, b.name, "name changed");
    assert_eq!(a.description, b.description, "description changed");
    assert_eq!(a.duration, b.duration, "duration changed");
    assert_eq!(a.turns, b.turns, "turns changed");
    assert_eq!(a.package, b.package, "package changed");
    assert_eq!(a.teams.len(), b.teams.len(), "number of teams changed");
    for (i, (x, y)) in a.teams.iter().zip(&b.teams).enumerate() {
        assert_eq!(x.id, y.id, "team #{i}: id changed");
        assert_eq!(x.name, y.name, "team #{i}: name changed");
        assert_eq!(
            x.timeline.name, y.timeline.name,
            "team #{i}: timeline name changed"
        );
        assert_eq!(
            x.timeline.injects, y.timeline.injects,
            "team #{i}: injects changed"
        );
        for (j, (p, q)) in a.teams.iter().zip(&b.teams).enumerate() {
            assert_eq!(
                Arc::ptr_eq(&x.timeline, &p.timeline),
                Arc::ptr_eq(&y.timeline, &q.timeline),
                "teams #{i} and #{j}: sharing of their timeline changed"
            );
        }
    }
}

/// Limits small enough that the fuzzer reaches them, or the defaults.
pub fn limits(u: &mut Unstructured<'_>) -> Result<Limits> {
    Ok(if u.arbitrary()? {
        Limits::default()
    } else {
        Limits {
            max_duration_secs: u.int_in_range(1..=7200)?,
            max_teams: u.int_in_range(1..=4)?,
            max_injects_per_timeline: u.int_in_range(1..=4)?,
            ..Limits::default()
        }
    })
}

/// Field names the loaders know, so generated objects hit them often.
const KEYS: &[&str] = &[
    "id",
    "scenario_id",
    "name",
    "description",
    "duration_minutes",
    "duration",
    "turn_based",
    "total_turns",
    "package",
    "teams",
    "timelines",
    "timeline_id",
    "timeline_file",
    "injects",
    "time",
    "type",
    "content",
    "turn",
    "priority",
    "media",
    "action",
];

/// Strings that matter to the loaders: ids, references, paths and the
/// characters ids refuse.
const STRINGS: &[&str] = &[
    "",
    "blue",
    "red",
    "t",
    "u",
    "a",
    "b",
    "t.json",
    "timelines/t.json",
    "./timelines/t.json",
    "timelines//t.json",
    "./t",
    "..",
    "../t.json",
    "/t.json",
    "a/b",
    "a\\b",
    "#",
    "+",
    "\u{0}",
    "\u{7f}",
    ".",
    "./",
    "t.json.json",
    "news",
    "sms",
    "Email",
    "x-1",
    "é",
    "four-teams",
];

/// Numbers at the edges of what the loaders accept.
const NUMBERS: &[f64] = &[
    0.0,
    1.0,
    -1.0,
    0.5,
    1.5,
    2.0,
    59.0,
    60.0,
    61.0,
    120.0,
    1000.0,
    1001.0,
    7200.0,
    7201.0,
    65535.0,
    65536.0,
    4294967235.0,
    4294967236.0,
    4294967295.0,
    4294967296.0,
    1e-9,
    1e300,
    -0.0,
    0.016666666666666666,
    119.98333333333333,
];

/// Any JSON value up to `depth` levels of nesting, biased toward the loaders'
/// field names and edge values.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 6 } else { 8 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Value::String(string(u)?),
        5 => Value::from(u.arbitrary::<u64>()?),
        6 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array(
                (0..len)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_>>()?,
            )
        }
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=5)? {
                map.insert(key(u)?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A scenario upload: the right shape, each part sometimes replaced by any
/// value, dropped, or joined by unknown fields.
pub fn scenario(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut root = Map::new();
    for key in ["id", "scenario_id", "name", "description", "package"] {
        if u.ratio(1, 3)? {
            root.insert(key.into(), scalar_or_any(u)?);
        }
    }
    for key in ["duration_minutes", "duration", "turn_based", "total_turns"] {
        if u.ratio(1, 2)? {
            let v = match key {
                "turn_based" if u.ratio(3, 4)? => Value::Bool(u.arbitrary()?),
                _ => scalar_or_any(u)?,
            };
            root.insert(key.into(), v);
        }
    }
    let teams = (0..u.int_in_range(0..=5)?)
        .map(|_| team(u))
        .collect::<Result<_>>()?;
    root.insert("teams".into(), maybe_any(u, Value::Array(teams))?);
    let timelines: Vec<Value> = (0..u.int_in_range(0..=4)?)
        .map(|_| timeline(u))
        .collect::<Result<_>>()?;
    let timelines = if u.arbitrary()? {
        Value::Array(timelines)
    } else {
        let mut keyed = Map::new();
        for timeline in timelines {
            keyed.insert(string(u)?, timeline);
        }
        Value::Object(keyed)
    };
    root.insert("timelines".into(), maybe_any(u, timelines)?);
    extra_fields(u, &mut root)?;
    Ok(Value::Object(root))
}

fn team(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut team = Map::new();
    if u.ratio(7, 8)? {
        team.insert("id".into(), scalar_or_any(u)?);
    }
    if u.ratio(1, 4)? {
        team.insert("name".into(), scalar_or_any(u)?);
    }
    match u.choose_index(4)? {
        0 => {}
        1 => {
            team.insert("timeline_file".into(), scalar_or_any(u)?);
        }
        2 => {
            team.insert("timeline_id".into(), scalar_or_any(u)?);
            team.insert("timeline_file".into(), scalar_or_any(u)?);
        }
        _ => {
            team.insert("timeline_id".into(), scalar_or_any(u)?);
        }
    }
    extra_fields(u, &mut team)?;
    maybe_any(u, Value::Object(team))
}

/// A timeline object, also used for a timeline file's whole content.
pub fn timeline(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut timeline = Map::new();
    if u.ratio(3, 4)? {
        timeline.insert("id".into(), scalar_or_any(u)?);
    }
    if u.ratio(1, 4)? {
        timeline.insert("name".into(), scalar_or_any(u)?);
    }
    let injects = (0..u.int_in_range(0..=5)?)
        .map(|_| inject(u))
        .collect::<Result<_>>()?;
    if u.ratio(15, 16)? {
        timeline.insert("injects".into(), maybe_any(u, Value::Array(injects))?);
    }
    extra_fields(u, &mut timeline)?;
    maybe_any(u, Value::Object(timeline))
}

fn inject(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut inject = Map::new();
    for key in ["id", "time", "type"] {
        if u.ratio(15, 16)? {
            inject.insert(key.into(), scalar_or_any(u)?);
        }
    }
    if u.ratio(15, 16)? {
        let content = if u.ratio(7, 8)? {
            let mut content = Map::new();
            extra_fields(u, &mut content)?;
            Value::Object(content)
        } else {
            value(u, 2)?
        };
        inject.insert("content".into(), content);
    }
    if u.ratio(1, 2)? {
        inject.insert("turn".into(), scalar_or_any(u)?);
    }
    extra_fields(u, &mut inject)?;
    maybe_any(u, Value::Object(inject))
}

/// Usually `shaped`, sometimes any value in its place.
fn maybe_any(u: &mut Unstructured<'_>, shaped: Value) -> Result<Value> {
    if u.ratio(1, 16)? {
        value(u, 2)
    } else {
        Ok(shaped)
    }
}

/// Usually an edge string or number, sometimes any value.
fn scalar_or_any(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.choose_index(8)? {
        0..=3 => Value::String(string(u)?),
        4..=6 => number(u)?,
        _ => value(u, 2)?,
    })
}

fn extra_fields(u: &mut Unstructured<'_>, map: &mut Map<String, Value>) -> Result<()> {
    if u.ratio(1, 4)? {
        for _ in 0..u.int_in_range(1..=3)? {
            map.insert(key(u)?, value(u, 2)?);
        }
    }
    Ok(())
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(KEYS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(STRINGS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    let f = if u.ratio(3, 4)? {
        *u.choose(NUMBERS)?
    } else {
        u.arbitrary::<f64>()?
    };
    // Whole numbers mostly as JSON integers, as a file would write them;
    // sometimes as `3.0`, which `time` must refuse.
    let whole = f.fract() == 0.0 && !(f == 0.0 && f.is_sign_negative());
    Ok(if whole && (0.0..1.8e19).contains(&f) && u.ratio(7, 8)? {
        Value::from(f as u64)
    } else if whole && (-9.2e18..0.0).contains(&f) && u.ratio(7, 8)? {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    })
}
