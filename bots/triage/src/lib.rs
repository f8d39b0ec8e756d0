//! The triage bot's logic: route a customer's question to the team whose keywords it
//! mentions most, or to a default team.
//!
//! ```
//! use switchboard_bot_triage::{Rule, Triage};
//!
//! let triage = Triage::new(
//!     vec![
//!         Rule::new("orders", ["order", "delivery", "parcel"]),
//!         Rule::new("billing", ["invoice", "refund", "charge"]),
//!     ],
//!     "support",
//! )?;
//! let route = triage.route("I was charged twice, I want a refund");
//! assert_eq!(route.team, "billing");
//! assert_eq!(route.matched, ["refund", "charge"]);
//! assert_eq!(triage.route("Hello?").team, "support");
//! # Ok::<(), switchboard_bot_triage::TriageError>(())
//! ```
//!
//! Texts and keywords are normalised the way the FAQ bot does ([`switchboard_bot_faq::text`]:
//! lower case, stop words dropped, light stemming), so "charged" matches the keyword "charge";
//! a keyword of several words matches them in a row. The team with the most distinct keywords
//! found wins; ties go to the rule listed first; no keyword found routes to the default team.
//! The [`Route::confidence`] is `share * (1 - 0.5^n)`: `n` keywords of the chosen team found,
//! `share` their part of all keywords found (of any team). One keyword alone gives 0.5, two
//! 0.75; a tie between two teams halves it.

mod bot;

use std::collections::HashMap;

use serde::Deserialize;
use switchboard_bot_faq::text;
use toml::Spanned;

pub use bot::TriageBot;

/// The largest triage file accepted, in bytes.
pub const MAX_TRIAGE_BYTES: usize = 256 * 1024;
/// The most rules (teams) a triage may have.
pub const MAX_RULES: usize = 100;
/// The most keywords one rule may have.
pub const MAX_KEYWORDS: usize = 200;
/// The longest keyword (or key phrase), in characters.
pub const MAX_KEYWORD_CHARS: usize = 100;
/// The longest team name, in characters.
pub const MAX_TEAM_CHARS: usize = 64;
/// The default team when a triage file does not name one.
pub const DEFAULT_TEAM: &str = "support";

/// Why a triage could not be built. Each says which rule (and line, from TOML) and what to
/// change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriageError {
    /// The text is not valid TOML or does not have the triage file's shape (a missing or
    /// misspelt field, a wrong type). The message shows the line and column.
    #[error("the triage file is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// The triage file is larger than accepted.
    #[error("the triage file is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// More rules than accepted.
    #[error("{count} rules; at most {max} are accepted")]
    TooManyRules {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two rules name the same team (put all its keywords in one rule).
    #[error("{at}: team {team:?} already has a rule ({first}); put its keywords in one rule")]
    DuplicateTeam {
        /// The team.
        team: String,
        /// Where the second rule is ("rule 3", or "line 14" from TOML).
        at: String,
        /// Where the first rule is.
        first: String,
    },
    /// A rule breaks a limit or has an unusable keyword.
    #[error("{at}: team {team:?}: {problem}")]
    Rule {
        /// The rule's team.
        team: String,
        /// Where the rule is ("rule 3", or "line 14" from TOML).
        at: String,
        /// What is wrong.
        problem: String,
    },
    /// The default team's name is not usable.
    #[error("default_team: {0}")]
    DefaultTeam(String),
}

/// A team and the keywords (or key phrases) that send a question to it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// The team questions go to.
    pub team: String,
    /// Words or phrases that point to the team.
    pub keywords: Vec<String>,
}

impl Rule {
    /// A rule sending questions with any of `keywords` to `team`.
    pub fn new<K: Into<String>>(
        team: impl Into<String>,
        keywords: impl IntoIterator<Item = K>,
    ) -> Self {
        Self {
            team: team.into(),
            keywords: keywords.into_iter().map(Into::into).collect(),
        }
    }
}

/// Where a question goes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Route {
    /// The team.
    pub team: String,
    /// How sure the route is, 0 (no keyword found: the default team) to below 1 (see the crate
    /// docs).
    pub confidence: f64,
    /// The chosen team's keywords found in the text, as written in its rule, in rule order.
    pub matched: Vec<String>,
}

/// Routes questions to teams by keywords.
#[derive(Clone, Debug)]
pub struct Triage {
    rules: Vec<CompiledRule>,
    default_team: String,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    team: String,
    /// (keyword as written, its tokens)
    keywords: Vec<(String, Vec<String>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriage {
    default_team: Option<String>,
    #[serde(default)]
    rule: Vec<Spanned<Rule>>,
}

impl Triage {
    /// A triage over `rules` (in order of preference: ties go to the first), sending questions
    /// that match none to `default_team`. Refuses duplicate teams, keywords of stop words only,
    /// and anything past the limits (`MAX_*`).
    pub fn new(rules: Vec<Rule>, default_team: impl Into<String>) -> Result<Self, TriageError> {
        let at: Vec<String> = (1..=rules.len()).map(|i| format!("rule {i}")).collect();
        Self::build(rules, default_team.into(), &at)
    }

    /// Loads a triage from TOML (format in the README); errors name the line.
    pub fn from_toml(input: &str) -> Result<Self, TriageError> {
        if input.len() > MAX_TRIAGE_BYTES {
            return Err(TriageError::TooLarge {
                len: input.len(),
                max: MAX_TRIAGE_BYTES,
            });
        }
        let raw: RawTriage = toml::from_str(input)?;
        let at = raw
            .rule
            .iter()
            .map(|r| format!("line {}", line_of(input, r.span().start)))
            .collect::<Vec<_>>();
        let rules = raw.rule.into_iter().map(Spanned::into_inner).collect();
        let default_team = raw.default_team.unwrap_or_else(|| DEFAULT_TEAM.to_owned());
        Self::build(rules, default_team, &at)
    }

    fn build(rules: Vec<Rule>, default_team: String, at: &[String]) -> Result<Self, TriageError> {
        if let Err(problem) = check_team(&default_team) {
            return Err(TriageError::DefaultTeam(problem));
        }
        if rules.len() > MAX_RULES {
            return Err(TriageError::TooManyRules {
                count: rules.len(),
                max: MAX_RULES,
            });
        }
        let mut first: HashMap<String, String> = HashMap::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (rule, at) in rules.into_iter().zip(at) {
            let Rule { team, keywords } = rule;
            if let Some(first) = first.get(&team) {
                return Err(TriageError::DuplicateTeam {
                    team,
                    at: at.clone(),
                    first: first.clone(),
                });
            }
            let fail = |problem: String| TriageError::Rule {
                team: team.clone(),
                at: at.clone(),
                problem,
            };
            check_team(&team).map_err(fail)?;
            if keywords.is_empty() || keywords.len() > MAX_KEYWORDS {
                return Err(fail(format!(
                    "needs 1 to {MAX_KEYWORDS} keywords, has {}",
                    keywords.len()
                )));
            }
            let mut phrases = Vec::with_capacity(keywords.len());
            for keyword in keywords {
                let tokens = text::tokens(&keyword);
                if keyword.chars().count() > MAX_KEYWORD_CHARS || tokens.is_empty() {
                    return Err(fail(format!(
                        "keyword {keyword:?} must have a word that is not a stop word and at most {MAX_KEYWORD_CHARS} characters"
                    )));
                }
                phrases.push((keyword, tokens));
            }
            first.insert(team.clone(), at.clone());
            compiled.push(CompiledRule {
                team,
                keywords: phrases,
            });
        }
        Ok(Self {
            rules: compiled,
            default_team,
        })
    }

    /// Where `text` goes: the team with the most distinct keywords found (the first of equals),
    /// or the default team with confidence 0 if none is found.
    #[must_use]
    pub fn route(&self, text: &str) -> Route {
        let tokens = text::tokens(text);
        let mut total = 0_usize;
        let mut best: Option<(&CompiledRule, Vec<&str>)> = None;
        for rule in &self.rules {
            let matched: Vec<&str> = rule
                .keywords
                .iter()
                .filter(|(_, phrase)| text::contains_phrase(&tokens, phrase))
                .map(|(keyword, _)| keyword.as_str())
                .collect();
            total += matched.len();
            if !matched.is_empty() && best.as_ref().is_none_or(|(_, b)| matched.len() > b.len()) {
                best = Some((rule, matched));
            }
        }
        match best {
            None => Route {
                team: self.default_team.clone(),
                confidence: 0.0,
                matched: Vec::new(),
            },
            Some((rule, matched)) => {
                let n = matched.len();
                let share = n as f64 / total as f64;
                let strength = 1.0 - 0.5_f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
                Route {
                    team: rule.team.clone(),
                    confidence: share * strength,
                    matched: matched.into_iter().map(str::to_owned).collect(),
                }
            }
        }
    }

    /// The team questions matching no rule go to.
    #[must_use]
    pub fn default_team(&self) -> &str {
        &self.default_team
    }

    /// The teams with a rule, in order.
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.team.as_str())
    }
}

/// Checks a team name: 1 to [`MAX_TEAM_CHARS`] characters, not blank, no control characters.
fn check_team(team: &str) -> Result<(), String> {
    if team.trim().is_empty()
        || team.chars().count() > MAX_TEAM_CHARS
        || team.chars().any(char::is_control)
    {
        return Err(format!(
            "a team name must have 1 to {MAX_TEAM_CHARS} characters and no control characters, not {team:?}"
        ));
    }
    Ok(())
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
