//! Validated identifiers, exercise times and speeds.
//!
//! Every id that ends up in an MQTT topic is parsed once, here, and is valid
//! from then on: non-empty, no `/`, `+`, `#` and no control characters, and
//! not `.` or `..` (they would change the meaning of a URL path). Ids are
//! shown to people (dashboards, the control room, reports, logs), so they
//! also hold no text-direction controls or invisible characters (U+202E
//! makes `exe.txt` read `txt.exe`) and no leading or trailing whitespace
//! (`blue` and `blue ` would be two teams that look alike).

use std::fmt;

use serde::Serialize;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id {0:?} contains {1:?}, which is not allowed in an MQTT topic")]
    Unsafe(String, char),
    #[error("id {0:?} is not allowed: it would name another path in a URL")]
    Dots(String),
    #[error(
        "id {0:?} contains U+{code:04X}, an invisible or text-direction character",
        code = u32::from(*.1)
    )]
    Invisible(String, char),
    #[error("id {0:?} starts or ends with whitespace")]
    Whitespace(String),
}

/// Characters that change how the text around them reads, or that do not
/// show: the Unicode bidirectional controls (Trojan Source, CVE-2021-42574)
/// and the zero-width and other invisible format characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                  // soft hyphen
        | '\u{034F}'                // combining grapheme joiner
        | '\u{061C}'                // Arabic letter mark
        | '\u{115F}' | '\u{1160}'    // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'    // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'    // Mongolian variation selectors, vowel separator
        | '\u{200B}'..='\u{200F}'    // zero-width space, joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}'    // LRE, RLE, PDF, LRO, RLO
        | '\u{2060}'..='\u{206F}'    // word joiner, invisible operators, LRI..PDI, deprecated
        | '\u{3164}'                // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'    // variation selectors
        | '\u{FEFF}'                // byte-order mark
        | '\u{FFA0}'                // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'    // interlinear annotation
        | '\u{E0000}'..='\u{E007F}'  // tags
    )
}

fn check_topic_safe(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw == "." || raw == ".." {
        return Err(IdError::Dots(raw.to_owned()));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(IdError::Unsafe(raw.to_owned(), c));
    }
    if let Some(c) = raw.chars().find(|&c| is_invisible(c)) {
        return Err(IdError::Invisible(raw.to_owned(), c));
    }
    if raw.trim() != raw {
        return Err(IdError::Whitespace(raw.to_owned()));
    }
    Ok(())
}

macro_rules! topic_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an id, refusing empty and MQTT-unsafe ones.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check_topic_safe(raw)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

topic_id!(
    /// The id of one exercise: the `{exerciseId}` of every topic.
    ExerciseId
);
topic_id!(
    /// The id of a team within an exercise: the `{teamId}` of its feed topic.
    TeamId
);
topic_id!(
    /// The id of an inject, unique within its timeline.
    InjectId
);

impl ExerciseId {
    /// A fresh id for a scenario that names none: `ex-` and the wall-clock time in
    /// milliseconds, in base 36, so ids sort by creation and stay short.
    pub fn generate(unix_millis: u128) -> Self {
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n = unix_millis;
        let mut out = Vec::new();
        loop {
            out.push(DIGITS[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        out.reverse();
        Self(format!(
            "ex-{}",
            String::from_utf8(out).expect("ascii digits")
        ))
    }
}

/// A whole number of exercise seconds from T+0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ExerciseSeconds(u32);

impl ExerciseSeconds {
    pub const ZERO: Self = Self(0);

    pub const fn new(secs: u32) -> Self {
        Self(secs)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ExerciseSeconds {
    /// `T+mm:ss`, minutes unbounded (`T+65:00` after an hour and five minutes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Exercise seconds per wall second: a finite number above 0 and at most
/// [`Speed::MAX`]. The command line, the API and the store all parse into it,
/// so a clock is never built from 0, a negative number, NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Speed(f64);

/// Why a speed was refused; names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("speed must be a number above 0 and at most 1000, got {0}")]
pub struct SpeedError(String);

impl Speed {
    /// The fastest an exercise runs: 1000 exercise seconds per wall second.
    pub const MAX: f64 = 1000.0;
    /// Real time.
    pub const ONE: Self = Self(1.0);

    pub fn new(value: f64) -> Result<Self, SpeedError> {
        if value.is_finite() && value > 0.0 && value <= Self::MAX {
            Ok(Self(value))
        } else {
            Err(SpeedError(value.to_string()))
        }
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl std::str::FromStr for Speed {
    type Err = SpeedError;

    /// For the command line: `--speed 10`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let value: f64 = raw
            .trim()
            .parse()
            .map_err(|_| SpeedError(format!("{raw:?}")))?;
        Self::new(value)
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_are_finite_positive_and_at_most_the_maximum() {
        let check = |value: f64, ok: bool| assert_eq!(Speed::new(value).is_ok(), ok, "{value}");
        check(1.0, true);
        check(0.25, true);
        check(1000.0, true);
        check(f64::MIN_POSITIVE, true);
        check(0.0, false);
        check(-0.0, false);
        check(-2.0, false);
        check(1000.5, false);
        check(f64::NAN, false);
        check(f64::INFINITY, false);
        check(f64::NEG_INFINITY, false);
        assert_eq!("10".parse::<Speed>().unwrap().get(), 10.0);
        assert_eq!(
            "fast".parse::<Speed>().unwrap_err().to_string(),
            "speed must be a number above 0 and at most 1000, got \"fast\""
        );
        assert_eq!(
            Speed::new(0.0).unwrap_err().to_string(),
            "speed must be a number above 0 and at most 1000, got 0"
        );
    }

    #[test]
    fn ids_refuse_topic_wildcards_and_control_characters() {
        let check = |raw: &str, ok: bool| assert_eq!(TeamId::parse(raw).is_ok(), ok, "{raw:?}");
        check("blue", true);
        check("blue-team_2.x", true);
        check("", false);
        check("a/b", false);
        check("a+b", false);
        check("a#", false);
        check("a\nb", false);
        check("a\u{7f}", false);
        check(".", false);
        check("..", false);
        check("...", true);
        check("a b?%", true);
        check("équipe-bleue", true);
        check("青", true);
        // Text-direction controls and invisible characters.
        check("blue\u{202E}txt.exe", false);
        check("\u{2066}blue", false);
        check("bl\u{200B}ue", false);
        check("blue\u{FEFF}", false);
        check("blue\u{E0041}", false);
        // Surrounding whitespace, of any kind; inside is fine.
        check(" blue", false);
        check("blue ", false);
        check("blue\u{3000}", false);
        check("\u{A0}blue", false);
        check("blue team", true);
        assert_eq!(
            TeamId::parse("a\u{202E}b").unwrap_err().to_string(),
            "id \"a\\u{202e}b\" contains U+202E, an invisible or text-direction character"
        );
        assert_eq!(
            TeamId::parse("blue ").unwrap_err().to_string(),
            "id \"blue \" starts or ends with whitespace"
        );
    }

    #[test]
    fn formats_exercise_time_as_minutes_and_seconds() {
        assert_eq!(ExerciseSeconds::new(332).to_string(), "T+05:32");
        assert_eq!(ExerciseSeconds::new(3900).to_string(), "T+65:00");
        assert_eq!(ExerciseSeconds::ZERO.to_string(), "T+00:00");
    }

    #[test]
    fn generated_ids_are_topic_safe() {
        let id = ExerciseId::generate(1_700_000_000_000);
        assert!(ExerciseId::parse(id.as_str()).is_ok());
        assert!(id.as_str().starts_with("ex-"));
    }
}
