//! The FAQ bot's logic: answer a customer's question from a TOML file of questions and
//! answers, and hand off to a team when no entry fits well enough.
//!
//! ```
//! use switchboard_bot_faq::{Answer, Faq};
//!
//! let faq = Faq::from_toml(r#"
//!     handoff_team = "support"
//!     min_score = 0.5
//!
//!     [[entry]]
//!     id = "hours"
//!     questions = ["What are your opening hours?"]
//!     keywords = ["open", "closed", "saturday"]
//!     answer = "Mon-Fri 9:00-17:00, Sat 10:00-14:00."
//! "#)?;
//!
//! assert_eq!(
//!     faq.answer("Are you open on Saturday?"),
//!     Answer::Reply("Mon-Fri 9:00-17:00, Sat 10:00-14:00.".to_owned())
//! );
//! assert!(matches!(faq.answer("My parrot is sad"), Answer::Handoff { .. }));
//! # Ok::<(), switchboard_bot_faq::FaqError>(())
//! ```
//!
//! The scorer is simple and deterministic (no model): texts become normalised tokens
//! (lower case, English stop words dropped, light stemming); an entry's score for a text is
//! `1 - (1 - j) * (1 - k)`, where `j` is the best Jaccard similarity between the text's tokens
//! and one of the entry's questions, and `k = 1 - 0.5^n` for `n` of the entry's keywords found
//! in the text. So an exact question scores 1, one keyword alone 0.5, two 0.75. The best entry
//! answers if it scores at least `min_score`; ties go to the entry listed first. See the README
//! for the file format and limits.

mod bot;
mod error;
pub mod text;

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

pub use bot::{FaqBot, HANDING_OFF};
pub use error::FaqError;

/// The largest FAQ file accepted, in bytes.
pub const MAX_FAQ_BYTES: usize = 1024 * 1024;
/// The most entries an FAQ may have.
pub const MAX_ENTRIES: usize = 1000;
/// The longest entry id, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// The most questions one entry may have.
pub const MAX_QUESTIONS: usize = 50;
/// The longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 500;
/// The most keywords one entry may have.
pub const MAX_KEYWORDS: usize = 50;
/// The longest keyword (or key phrase), in characters.
pub const MAX_KEYWORD_CHARS: usize = 100;
/// The longest answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 4000;
/// The longest team name, in characters.
pub const MAX_TEAM_CHARS: usize = 64;
/// How much of the customer's text a handoff note quotes, in characters.
pub const NOTE_QUOTE_CHARS: usize = 300;

/// The team handed off to when `handoff_team` is not set.
pub const DEFAULT_HANDOFF_TEAM: &str = "support";
/// The score an entry needs to answer when `min_score` is not set.
pub const DEFAULT_MIN_SCORE: f64 = 0.5;

/// What the bot should do with a customer's text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// Reply with this answer.
    Reply(String),
    /// No entry fits well enough: hand the thread off to `team`, with `note` for the humans
    /// (it quotes the customer's text).
    Handoff {
        /// The team to hand off to (the FAQ's `handoff_team`).
        team: String,
        /// What the bot tells the team: the best score and the customer's question.
        note: String,
    },
}

/// The best-fitting entry for a text and its score, from [`Faq::best`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Scored<'a> {
    /// The entry's id.
    pub id: &'a str,
    /// Its score, from 0 (nothing in common) to 1.
    pub score: f64,
}

/// An FAQ loaded from TOML: entries of questions, keywords and an answer.
#[derive(Clone, Debug)]
pub struct Faq {
    handoff_team: String,
    min_score: f64,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    id: String,
    /// Each question's distinct tokens, sorted.
    questions: Vec<Vec<String>>,
    /// Each keyword's tokens, in order (a key phrase matches as a contiguous run).
    keywords: Vec<Vec<String>>,
    answer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaq {
    handoff_team: Option<String>,
    min_score: Option<f64>,
    #[serde(default)]
    entry: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    questions: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    answer: String,
}

impl Faq {
    /// Loads an FAQ from TOML (format in the README). Refuses, with the line concerned, invalid
    /// TOML, unknown or missing fields, duplicate ids, entries without a usable question, and
    /// anything past the limits (`MAX_*`).
    pub fn from_toml(input: &str) -> Result<Self, FaqError> {
        if input.len() > MAX_FAQ_BYTES {
            return Err(FaqError::TooLarge {
                len: input.len(),
                max: MAX_FAQ_BYTES,
            });
        }
        let raw: RawFaq = toml::from_str(input)?;
        let handoff_team = raw
            .handoff_team
            .unwrap_or_else(|| DEFAULT_HANDOFF_TEAM.to_owned());
        let team_len = handoff_team.chars().count();
        if handoff_team.trim().is_empty()
            || team_len > MAX_TEAM_CHARS
            || handoff_team.chars().any(char::is_control)
        {
            return Err(FaqError::Setting {
                field: "handoff_team",
                problem: format!(
                    "must be a team name of 1 to {MAX_TEAM_CHARS} characters, not {handoff_team:?}"
                ),
            });
        }
        let min_score = raw.min_score.unwrap_or(DEFAULT_MIN_SCORE);
        if !(0.0..=1.0).contains(&min_score) {
            return Err(FaqError::Setting {
                field: "min_score",
                problem: format!("must be a number from 0 to 1, not {min_score}"),
            });
        }
        if raw.entry.len() > MAX_ENTRIES {
            return Err(FaqError::TooManyEntries {
                count: raw.entry.len(),
                max: MAX_ENTRIES,
            });
        }
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut entries = Vec::with_capacity(raw.entry.len());
        for spanned in raw.entry {
            let line = line_of(input, spanned.span().start);
            let raw = spanned.into_inner();
            if let Some(&first_line) = first_line.get(&raw.id) {
                return Err(FaqError::DuplicateId {
                    id: raw.id,
                    line,
                    first_line,
                });
            }
            let entry = Entry::validate(raw).map_err(|(id, problem)| FaqError::Entry {
                id,
                line,
                problem,
            })?;
            first_line.insert(entry.id.clone(), line);
            entries.push(entry);
        }
        Ok(Self {
            handoff_team,
            min_score,
            entries,
        })
    }

    /// What to do with the customer's `text`: the best entry's answer if it scores at least
    /// `min_score`, otherwise a handoff to `handoff_team` with a note quoting the text.
    #[must_use]
    pub fn answer(&self, text: &str) -> Answer {
        let best = self.best(text);
        if let Some(best) = &best
            && best.score >= self.min_score
            && let Some(entry) = self.entries.iter().find(|e| e.id == best.id)
        {
            return Answer::Reply(entry.answer.clone());
        }
        let closest = match best {
            Some(Scored { id, score }) if score > 0.0 => format!("closest {id:?} at {score:.2}"),
            _ => "nothing close".to_owned(),
        };
        Answer::Handoff {
            team: self.handoff_team.clone(),
            note: format!(
                "The FAQ has no confident answer ({closest}, needs {:.2}). The customer asked: \"{}\"",
                self.min_score,
                text::quote(text, NOTE_QUOTE_CHARS)
            ),
        }
    }

    /// The entry that fits `text` best and its score (the first of equals), or `None` if the
    /// FAQ has no entries.
    #[must_use]
    pub fn best(&self, text: &str) -> Option<Scored<'_>> {
        let tokens = text::tokens(text);
        let mut set = tokens.clone();
        set.sort_unstable();
        set.dedup();
        let mut best: Option<Scored<'_>> = None;
        for entry in &self.entries {
            let score = entry.score(&tokens, &set);
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Scored {
                    id: &entry.id,
                    score,
                });
            }
        }
        best
    }

    /// The team unsure questions are handed off to.
    #[must_use]
    pub fn handoff_team(&self) -> &str {
        &self.handoff_team
    }

    /// The score an entry needs to answer.
    #[must_use]
    pub fn min_score(&self) -> f64 {
        self.min_score
    }

    /// The entries' ids, in file order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.id.as_str())
    }

    /// How many entries the FAQ has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the FAQ has no entries (then every question is handed off).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    /// Checks a raw entry; on error, its id and the problem.
    fn validate(raw: RawEntry) -> Result<Self, (String, String)> {
        let RawEntry {
            id,
            questions,
            keywords,
            answer,
        } = raw;
        let fail = |problem: String| Err((id.clone(), problem));
        if id.is_empty()
            || id.chars().count() > MAX_ID_CHARS
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail(format!(
                "the id must be 1 to {MAX_ID_CHARS} characters of a-z, A-Z, 0-9, '-' and '_'"
            ));
        }
        if questions.is_empty() || questions.len() > MAX_QUESTIONS {
            return fail(format!(
                "needs 1 to {MAX_QUESTIONS} questions, has {}",
                questions.len()
            ));
        }
        let mut question_sets = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            if q.chars().count() > MAX_QUESTION_CHARS {
                return fail(format!(
                    "question {} is longer than {MAX_QUESTION_CHARS} characters",
                    i + 1
                ));
            }
            let set = text::token_set(q);
            if set.is_empty() {
                return fail(format!(
                    "question {} ({q:?}) has no words to match (only stop words or punctuation)",
                    i + 1
                ));
            }
            question_sets.push(set);
        }
        if keywords.len() > MAX_KEYWORDS {
            return fail(format!(
                "has {} keywords; at most {MAX_KEYWORDS} are accepted",
                keywords.len()
            ));
        }
        let mut keyword_phrases = Vec::with_capacity(keywords.len());
        for k in &keywords {
            let phrase = text::tokens(k);
            if k.chars().count() > MAX_KEYWORD_CHARS || phrase.is_empty() {
                return fail(format!(
                    "keyword {k:?} must have a word that is not a stop word and at most {MAX_KEYWORD_CHARS} characters"
                ));
            }
            keyword_phrases.push(phrase);
        }
        let answer = answer.trim().to_owned();
        if answer.is_empty() || answer.chars().count() > MAX_ANSWER_CHARS {
            return fail(format!(
                "the answer must have 1 to {MAX_ANSWER_CHARS} characters"
            ));
        }
        Ok(Self {
            id,
            questions: question_sets,
            keywords: keyword_phrases,
            answer,
        })
    }

    /// The score of a text, given its tokens in order and as a sorted set.
    fn score(&self, tokens: &[String], set: &[String]) -> f64 {
        let j = self
            .questions
            .iter()
            .map(|q| jaccard(set, q))
            .fold(0.0, f64::max);
        let hits = self
            .keywords
            .iter()
            .filter(|k| text::contains_phrase(tokens, k))
            .count();
        let k = 1.0 - 0.5_f64.powi(i32::try_from(hits).unwrap_or(i32::MAX));
        1.0 - (1.0 - j) * (1.0 - k)
    }
}

/// Jaccard similarity of two sorted, deduplicated token lists: |a ∩ b| / |a ∪ b| (0 if both
/// are empty).
fn jaccard(a: &[String], b: &[String]) -> f64 {
    let mut common = 0_usize;
    let mut a_iter = a.iter().peekable();
    let mut b_iter = b.iter().peekable();
    while let (Some(x), Some(y)) = (a_iter.peek(), b_iter.peek()) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => {
                a_iter.next();
            }
            std::cmp::Ordering::Greater => {
                b_iter.next();
            }
            std::cmp::Ordering::Equal => {
                a_iter.next();
                b_iter.next();
                common += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    if union == 0 {
        0.0
    } else {
        common as f64 / union as f64
    }
}

/// The 1-based line of a byte offset in `input`.
fn line_of(input: &str, offset: usize) -> usize {
    input
        .get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

#[cfg(test)]
mod tests;
