//! The two-way play sections of the HTML report: the scorecard, outcomes,
//! responses, decisions and posts; shown only when the run had any.

use maud::{Markup, html as markup};

use super::model::planned;
use super::play::ReportPlay;

pub fn play_sections(play: &ReportPlay) -> Markup {
    let played = !(play.responses.is_empty()
        && play.outcomes.is_empty()
        && play.posts.is_empty()
        && play.decisions.is_empty()
        && play
            .scorecard
            .iter()
            .all(|t| t.scores.iter().all(|s| s.score.is_none())));
    if !played {
        return markup! {};
    }
    markup! {
        h2 { "Scorecard" }
        table class="scorecard" {
            thead { tr {
                th { "Team" } th class="num" { "Met" } th class="num" { "Late" }
                th class="num" { "Wrong" } th class="num" { "Missed" } th class="num" { "Pending" }
                th class="num" { "Mean response time" } th { "Scores (mean of each evaluator's latest)" }
            } }
            tbody {
                @for t in &play.scorecard {
                    tr {
                        td { (t.team_id) }
                        td class="num" { (t.met) } td class="num" { (t.late) }
                        td class="num" { (t.wrong) } td class="num" { (t.missed) }
                        td class="num" { (t.pending) }
                        td class="num" {
                            @if let Some(s) = t.mean_response_time_s { (format!("{s:.0} s")) } @else { "–" }
                        }
                        td {
                            @for line in &t.scores {
                                div {
                                    (line.title.as_deref().unwrap_or(&line.target_id))
                                    ": "
                                    @if let Some(score) = line.score { strong { (format!("{score:.0}")) } } @else { "not scored" }
                                    @for s in &line.by_evaluator {
                                        @if let Some(note) = &s.note {
                                            div class="note" { (s.by.as_deref().unwrap_or("evaluator")) ": " (note) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !play.outcomes.is_empty() {
            h2 { "Outcomes and branches" }
            table {
                thead { tr {
                    th { "Team" } th { "Inject" } th { "Outcome" } th { "Answered" }
                    th { "Choice" } th { "Condition" } th { "Why skipped" }
                } }
                tbody {
                    @for o in &play.outcomes {
                        tr {
                            td { (o.team_id) } td { (o.inject_id) }
                            td class=(format!("o-{}", o.outcome.as_deref().unwrap_or("none"))) { (o.outcome.as_deref().unwrap_or("")) }
                            td { @if let Some(at) = o.answered_at { (planned(i64::from(at))) } }
                            td { (o.choice.as_deref().unwrap_or("")) }
                            td { (o.condition.as_deref().unwrap_or("")) }
                            td { (o.skip_reason.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if !play.responses.is_empty() {
            h2 { "Responses" }
            table {
                thead { tr {
                    th { "At" } th { "Team" } th { "Inject" } th { "Answer" } th { "By" }
                    th class="num" { "Response time" } th { "Outcome" } th { "From" }
                } }
                tbody {
                    @for r in &play.responses {
                        tr {
                            td { (planned(r.exercise_time)) } td { (r.team_id) } td { (r.inject_id) }
                            td {
                                @if let Some(c) = &r.choice { strong { (c) } " " }
                                (r.text.as_deref().unwrap_or(""))
                                @if r.edit { " " span class="note" { "(edit)" } }
                            }
                            td { (r.by.as_deref().unwrap_or("")) }
                            td class="num" { @if let Some(t) = r.response_time_s { (t) " s" } }
                            td { (r.outcome.as_deref().unwrap_or("")) }
                            td { (r.source) }
                        }
                    }
                }
            }
        }
        @if !play.decisions.is_empty() || !play.posts.is_empty() {
            h2 { "Decisions and posts" }
            table {
                thead { tr { th { "At" } th { "What" } th { "Detail" } } }
                tbody {
                    @for d in &play.decisions {
                        tr {
                            td { (planned(d.exercise_time)) }
                            td { "decision " strong { (d.decision) } }
                            td {
                                "for " (d.teams.as_ref().map_or_else(|| "every team".to_owned(), |t| t.join(", ")))
                                "; released " (d.released.len()) " (" (d.source) ")"
                            }
                        }
                    }
                    @for p in &play.posts {
                        tr {
                            td { (planned(p.exercise_time)) }
                            td { "post on " strong { (p.channel) } }
                            td {
                                (p.persona.as_deref().or(p.author_team.as_deref()).unwrap_or(""))
                                @if let Some(by) = &p.by { " (" (by) ")" }
                                ": " (p.text)
                            }
                        }
                    }
                }
            }
        }
    }
}
