//! Mosquitto's `acl_file`, read and applied: who may publish to, subscribe
//! to and receive which topics. The embedded broker's gate enforces the
//! file `broker-acl` writes for Mosquitto, so one file gives the same closed
//! room on either broker.
//!
//! The format, as Mosquitto reads it:
//! - `user NAME` starts the rules of one user; `topic` lines before the first
//!   `user` line apply to clients without a user name;
//! - `topic [read|write|readwrite|deny] TOPIC` (access defaults to
//!   `readwrite`; the topic is the rest of the line, wildcards allowed);
//! - `pattern [ACCESS] TOPIC` applies to every user, with `%u` replaced by
//!   the user name and `%c` by the client id;
//! - `#` starts a comment line.
//!
//! A user's own rules are checked before the patterns; within each, a
//! matching `deny` wins over any grant (Mosquitto keeps deny rules first). A
//! user without rules may do nothing.
//!
//! Where Mosquitto 2.0 grants every subscription and then drops each message
//! the client may not read, the gate refuses (SUBACK failure) a filter that
//! no readable topic can match, so a client learns at once that it asked for
//! something it may not have; a filter that matches some readable topics is
//! granted, and every message is still checked before it is delivered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    topic: String,
}

/// A parsed `acl_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Rules of clients without a user name.
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A line of the file that is not understood.
#[derive(Debug, thiserror::Error)]
#[error("line {line} of {}: {reason}", .path.display())]
pub struct AclFileError {
    pub path: PathBuf,
    /// 1-based; 0 when the file cannot be read.
    pub line: usize,
    pub reason: String,
}

impl Acl {
    /// Reads an `acl_file`.
    pub fn read(path: &Path) -> Result<Self, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclFileError {
            path: path.to_owned(),
            line: 0,
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|(line, reason)| AclFileError {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of an `acl_file`; an error gives the line and why.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut acl = Self::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r').trim_start();
            if line.trim_end().is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match keyword {
                "user" => {
                    let name = rest.trim_end();
                    if name.is_empty() {
                        return Err((i + 1, "`user` needs a user name".into()));
                    }
                    acl.users.entry(name.to_owned()).or_default();
                    user = Some(name.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = rule(rest).map_err(|reason| (i + 1, reason))?;
                    let list = match (keyword, &user) {
                        ("pattern", _) => &mut acl.patterns,
                        (_, Some(name)) => acl.users.entry(name.clone()).or_default(),
                        (_, None) => &mut acl.anonymous,
                    };
                    list.push(rule);
                }
                other => {
                    return Err((
                        i + 1,
                        format!("unknown keyword {other:?}: expected user, topic or pattern"),
                    ));
                }
            }
        }
        Ok(acl)
    }

    /// Whether `user` (None: anonymous) with `client_id` may publish to
    /// `topic` (a topic name, no wildcards).
    pub fn may_publish(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.may(user, client_id, topic, Access::writes)
    }

    /// Whether `user` may receive a message published to `topic`.
    pub fn may_receive(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.may(user, client_id, topic, Access::reads)
    }

    /// Whether a rule matching `topic` grants what `grants` asks, and none
    /// matching it denies.
    fn may(
        &self,
        user: Option<&str>,
        client_id: &str,
        topic: &str,
        grants: fn(Access) -> bool,
    ) -> bool {
        self.decide(user, client_id, |rule, pattern| {
            if !topic_matches(pattern, topic) {
                None
            } else if rule.access == Access::Deny {
                Some(false)
            } else {
                grants(rule.access).then_some(true)
            }
        })
    }

    /// Whether `user` may subscribe to `filter`: some topic it may read
    /// matches the filter, and no deny rule covers all of it.
    pub fn may_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        self.decide(user, client_id, |rule, pattern| {
            if rule.access == Access::Deny {
                filter_within(filter, pattern).then_some(false)
            } else {
                (rule.access.reads() && filters_overlap(filter, pattern)).then_some(true)
            }
        })
    }

    /// The first answer of `check` over the user's rules (deny rules
    /// first), then the patterns (deny first, `%u` and `%c` replaced); no
    /// answer is a refusal.
    fn decide(
        &self,
        user: Option<&str>,
        client_id: &str,
        check: impl Fn(&Rule, &str) -> Option<bool>,
    ) -> bool {
        let own = match user {
            Some(name) => self.users.get(name).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let deny_first = |rules: &[Rule], substitute: bool| {
            let ordered = rules
                .iter()
                .filter(|r| r.access == Access::Deny)
                .chain(rules.iter().filter(|r| r.access != Access::Deny));
            for rule in ordered {
                let answer = if substitute {
                    // Mosquitto skips a %u pattern for anonymous clients.
                    if user.is_none() && rule.topic.contains("%u") {
                        continue;
                    }
                    let topic = rule
                        .topic
                        .replace("%u", user.unwrap_or(""))
                        .replace("%c", client_id);
                    check(rule, &topic)
                } else {
                    check(rule, &rule.topic)
                };
                if let Some(answer) = answer {
                    return Some(answer);
                }
            }
            None
        };
        deny_first(own, false)
            .or_else(|| deny_first(&self.patterns, true))
            .unwrap_or(false)
    }

    /// Whether the file names `user` (in a `user` line).
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

/// `[ACCESS] TOPIC` of a `topic` or `pattern` line.
fn rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let (access, topic) = match first {
        "read" => (Access::Read, after),
        "write" => (Access::Write, after),
        "readwrite" => (Access::ReadWrite, after),
        "deny" => (Access::Deny, after),
        _ => (Access::ReadWrite, rest),
    };
    let topic = topic.trim();
    if topic.is_empty() {
        return Err("a rule needs a topic".into());
    }
    Ok(Rule {
        access,
        topic: topic.to_owned(),
    })
}

/// Whether the topic name `topic` matches the filter `filter` (MQTT 3.1.1
/// 4.7: `+` one level, `#` the rest including the parent, wildcards at the
/// first level do not match topics starting with `$`).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter = filter.split('/');
    let mut topic = topic.split('/');
    loop {
        match (filter.next(), topic.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic name matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    // A filter starting with `$` matches only `$` topics, which no filter
    // starting with a wildcard matches.
    if starts_with_wildcard(a) && b.starts_with('$')
        || starts_with_wildcard(b) && a.starts_with('$')
    {
        return false;
    }
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `inner` matches is matched by `outer` too.
pub fn filter_within(inner: &str, outer: &str) -> bool {
    if inner.starts_with('$') && starts_with_wildcard(outer) {
        return false;
    }
    let mut inner = inner.split('/');
    let mut outer = outer.split('/');
    loop {
        match (inner.next(), outer.next()) {
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with('+') || filter.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
topic read public/#

user blue
topic read /exercise/x/team/blue/feed
topic read /exercise/x/timer

user ctl
topic readwrite /exercise/x/control
topic read /exercise/x/team/+/feed
topic deny /exercise/x/team/secret/feed

user all
topic /exercise/x/#

pattern read /private/%u/#
pattern write /clients/%c
";

    fn acl() -> Acl {
        Acl::parse(FILE).unwrap()
    }

    #[test]
    fn topics_match_filters_as_mqtt_says() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("/exercise/+/timer", "/exercise/x/timer"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
    }

    #[test]
    fn overlap_and_containment_of_filters() {
        assert!(filters_overlap(
            "/exercise/x/#",
            "/exercise/x/team/blue/feed"
        ));
        assert!(filters_overlap("#", "/exercise/x/timer"));
        assert!(filters_overlap("/exercise/+/timer", "/exercise/x/timer"));
        assert!(!filters_overlap(
            "/exercise/x/team/red/feed",
            "/exercise/x/team/blue/feed"
        ));
        assert!(!filters_overlap("#", "$SYS/#"));
        assert!(filters_overlap("$SYS/#", "$SYS/broker"));
        assert!(filter_within("/a/b", "/a/#"));
        assert!(filter_within("/a/+/c", "/a/#"));
        assert!(filter_within("/a/x/c", "/a/+/c"));
        assert!(!filter_within("/a/+/c", "/a/x/c"));
        assert!(!filter_within("/a/#", "/a/+"));
        assert!(!filter_within("#", "/a/#"));
        assert!(filter_within("#", "#"));
        assert!(!filter_within("$SYS/x", "#"));
        assert!(filter_within("$SYS/x", "$SYS/#"));
        assert!(!filter_within("+/x", "$SYS/x"));
    }

    #[test]
    fn a_team_reads_only_its_own_topics_and_writes_none() {
        let acl = acl();
        let blue = Some("blue");
        assert!(acl.may_receive(blue, "c", "/exercise/x/team/blue/feed"));
        assert!(acl.may_receive(blue, "c", "/exercise/x/timer"));
        assert!(!acl.may_receive(blue, "c", "/exercise/x/team/red/feed"));
        assert!(!acl.may_publish(blue, "c", "/exercise/x/control"));
        assert!(!acl.may_publish(blue, "c", "/exercise/x/timer"));
        assert!(acl.may_subscribe(blue, "c", "/exercise/x/team/blue/feed"));
        // A wildcard over readable topics is granted; delivery then checks.
        assert!(acl.may_subscribe(blue, "c", "/exercise/x/#"));
        assert!(acl.may_subscribe(blue, "c", "#"));
        assert!(!acl.may_subscribe(blue, "c", "/exercise/x/team/red/feed"));
        assert!(!acl.may_subscribe(blue, "c", "/exercise/x/control"));
        assert!(!acl.may_subscribe(blue, "c", "/exercise/y/#"));
    }

    #[test]
    fn deny_wins_and_readwrite_is_the_default() {
        let acl = acl();
        let ctl = Some("ctl");
        assert!(acl.may_publish(ctl, "c", "/exercise/x/control"));
        assert!(acl.may_receive(ctl, "c", "/exercise/x/control"));
        assert!(acl.may_receive(ctl, "c", "/exercise/x/team/red/feed"));
        assert!(!acl.may_receive(ctl, "c", "/exercise/x/team/secret/feed"));
        assert!(!acl.may_subscribe(ctl, "c", "/exercise/x/team/secret/feed"));
        // Partly denied: granted, and delivery leaves out the denied feed.
        assert!(acl.may_subscribe(ctl, "c", "/exercise/x/team/+/feed"));
        assert!(acl.may_publish(Some("all"), "c", "/exercise/x/control"));
        assert!(acl.may_receive(Some("all"), "c", "/exercise/x/team/red/feed"));
    }

    #[test]
    fn anonymous_rules_patterns_and_unknown_users() {
        let acl = acl();
        assert!(acl.may_receive(None, "c", "public/news"));
        assert!(!acl.may_receive(Some("blue"), "c", "public/news"));
        assert!(!acl.may_receive(None, "c", "/exercise/x/timer"));
        assert!(acl.may_receive(Some("blue"), "c", "/private/blue/inbox"));
        assert!(!acl.may_receive(Some("blue"), "c", "/private/red/inbox"));
        assert!(!acl.may_receive(None, "c", "/private//inbox"));
        assert!(acl.may_publish(Some("nobody"), "me", "/clients/me"));
        assert!(!acl.may_publish(Some("nobody"), "me", "/clients/you"));
        assert!(!acl.may_receive(Some("nobody"), "me", "/exercise/x/timer"));
        assert!(acl.has_user("blue"));
        assert!(!acl.has_user("nobody"));
    }

    #[test]
    fn the_file_broker_acl_writes_reads_back_as_its_table_says() {
        use crate::domain::{ExerciseId, TeamId};
        let teams = [
            TeamId::parse("blue").unwrap(),
            TeamId::parse("red").unwrap(),
        ];
        let plan = crate::mqtt::broker_files::plan(&ExerciseId::parse("ex").unwrap(), &teams, None)
            .unwrap();
        let acl = Acl::parse(&plan.acl_file()).unwrap();
        let (blue, ctl, engine) = (Some("ex-blue"), Some("ex-controller"), Some("ex-engine"));
        for topic in ["team/blue/feed", "timer", "status", "monitoring"] {
            let topic = format!("/exercise/ex/{topic}");
            assert!(acl.may_receive(blue, "c", &topic), "{topic}");
            assert!(!acl.may_publish(blue, "c", &topic), "{topic}");
            assert!(acl.may_receive(ctl, "c", &topic), "{topic}");
        }
        assert!(!acl.may_receive(blue, "c", "/exercise/ex/team/red/feed"));
        assert!(!acl.may_receive(blue, "c", "/exercise/ex/control"));
        assert!(!acl.may_publish(blue, "c", "/exercise/ex/control"));
        assert!(acl.may_publish(ctl, "c", "/exercise/ex/control"));
        assert!(acl.may_receive(ctl, "c", "/exercise/ex/team/red/feed"));
        assert!(!acl.may_publish(ctl, "c", "/exercise/ex/team/red/feed"));
        assert!(acl.may_publish(engine, "c", "/exercise/ex/team/red/feed"));
        assert!(acl.may_receive(engine, "c", "/exercise/ex/control"));
        assert!(!acl.may_receive(engine, "c", "/exercise/other/control"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            Acl::parse("user a\ntopic\n").unwrap_err().0,
            2,
            "a rule without a topic"
        );
        assert_eq!(Acl::parse("user\n").unwrap_err().0, 1);
        let (line, reason) = Acl::parse("\n\nallow all\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(reason.contains("unknown keyword"), "{reason}");
    }
}
