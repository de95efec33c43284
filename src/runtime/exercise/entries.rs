//! The scenario's entries of an exercise, by slot: which team, which inject
//! and its feed template.

use std::sync::Arc;

use crate::mqtt::wire::FeedTemplate;
use crate::scenario::{Inject, Scenario, Timeline};

/// One (team, inject) of the current run, by slot. Small: the inject and its
/// feed template are shared with every team and run that has it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) team: usize,
    source: Source,
    /// Sent live by a controller (not in the scenario).
    pub(super) live: bool,
}

#[derive(Debug, Clone)]
enum Source {
    /// Inject `index` of a scenario timeline, with the timeline's templates.
    Timeline {
        timeline: Arc<Timeline>,
        templates: Arc<[FeedTemplate]>,
        index: usize,
    },
    /// An inject of its own: sent live, or rescheduled.
    Own {
        inject: Arc<Inject>,
        template: Arc<FeedTemplate>,
    },
}

impl Entry {
    pub(super) fn own(team: usize, inject: Inject, live: bool) -> Self {
        Self {
            team,
            source: Source::Own {
                template: Arc::new(FeedTemplate::new(&inject)),
                inject: Arc::new(inject),
            },
            live,
        }
    }

    pub(super) fn inject(&self) -> &Inject {
        match &self.source {
            Source::Timeline {
                timeline, index, ..
            } => &timeline.injects[*index],
            Source::Own { inject, .. } => inject,
        }
    }

    pub(super) fn template(&self) -> &FeedTemplate {
        match &self.source {
            Source::Timeline {
                templates, index, ..
            } => &templates[*index],
            Source::Own { template, .. } => template,
        }
    }
}

/// The scenario's entries, by slot: team by team, each timeline's injects in
/// order; one set of templates per distinct timeline.
pub(super) fn scenario_entries(scenario: &Scenario) -> Vec<Entry> {
    let mut templates: Vec<(*const Timeline, Arc<[FeedTemplate]>)> = Vec::new();
    let mut out = Vec::new();
    for (team, t) in scenario.teams.iter().enumerate() {
        let key = Arc::as_ptr(&t.timeline);
        let shared = match templates.iter().find(|(k, _)| *k == key) {
            Some((_, shared)) => shared.clone(),
            None => {
                // A feed message says when the inject was due on the
                // exercise clock: in a turn-based scenario, after its turn's start.
                let made: Arc<[FeedTemplate]> = t
                    .timeline
                    .injects
                    .iter()
                    .map(|i| match scenario.turns {
                        Some(_) => FeedTemplate::new(&Inject {
                            time: scenario.due(i),
                            ..i.clone()
                        }),
                        None => FeedTemplate::new(i),
                    })
                    .collect();
                templates.push((key, made.clone()));
                made
            }
        };
        out.extend((0..t.timeline.injects.len()).map(|index| Entry {
            team,
            source: Source::Timeline {
                timeline: t.timeline.clone(),
                templates: shared.clone(),
                index,
            },
            live: false,
        }));
    }
    out
}
