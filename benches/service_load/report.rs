//! Printed figures: tick phases, the worst seconds, one row of a table.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::TARGET_TICK_P99_MS;
use crate::common::{self, Spread};

/// How evenly the exercises' ticks fall over the second.
pub fn print_phases(starts: &[Instant]) {
    let first = *starts.iter().min().expect("exercises");
    let mut bins = [0usize; 100];
    for s in starts {
        let phase = (*s - first).as_secs_f64().fract();
        bins[((phase * 100.0) as usize).min(99)] += 1;
    }
    let max = bins.iter().max().copied().unwrap_or(0);
    let last = *starts.iter().max().expect("exercises");
    println!(
        "tick phases: starts span {:.2} s; most ticks due in one 10 ms slot of the second: {max} (even: {:.1})",
        (last - first).as_secs_f64(),
        starts.len() as f64 / 100.0
    );
}

/// The exercise seconds whose timer messages reached the subscriber latest.
pub fn print_worst_seconds(timed: &[(u32, f64)]) {
    let mut by_second: BTreeMap<u32, (f64, usize, usize)> = BTreeMap::new();
    for &(second, error) in timed {
        let e = by_second.entry(second).or_insert((f64::MIN, 0, 0));
        e.0 = e.0.max(error);
        e.1 += 1;
        e.2 += usize::from(error > TARGET_TICK_P99_MS);
    }
    let mut worst: Vec<(u32, (f64, usize, usize))> = by_second.into_iter().collect();
    worst.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let shown: Vec<String> = worst
        .iter()
        .take(3)
        .map(|(second, (max, n, over))| {
            format!("T+{second}: max {max:.1} ms, {over}/{n} over {TARGET_TICK_P99_MS} ms")
        })
        .collect();
    println!("worst seconds at the subscriber: {}", shown.join("; "));
}

pub fn print_row(label: &str, values: &[f64]) {
    let s = Spread::of(values.iter().copied());
    let p90 = common::percentile(&common::sorted(values.iter().copied()), 90.0);
    println!(
        "{label:<62} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        s.n, s.p50, p90, s.p99, s.max
    );
}
