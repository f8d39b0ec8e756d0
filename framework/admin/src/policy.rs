//! Routing decisions: pure functions of the policy, the agents and the time.

use std::collections::BTreeMap;

use switchboard_protocol::{AgentKind, DeviceId, HandoffTarget};

use crate::config::{Policy, Strategy};

/// An agent as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// Its device.
    pub device: DeviceId,
    /// Bot or human.
    pub kind: AgentKind,
    /// Its teams.
    pub teams: Vec<String>,
    /// Threads it is in now.
    pub load: usize,
}

/// Who gets a thread, and why (the reason goes to the audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The agent's device.
    pub device: DeviceId,
    /// The agent's name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Round-robin positions per team, kept across decisions (and restarts).
pub type Turns = BTreeMap<String, u64>;

/// Picks the agent for a new thread whose first customer message is `text`: the first rule
/// with a keyword in it gives the team (else the fallback team, else everyone); within it, bots
/// first if the policy says so (humans only within business hours), then by strategy. If nobody
/// in the rule's team is available, the fallback team is tried. `None`: nobody is available and
/// the admin keeps the thread.
#[must_use]
pub fn route(
    policy: &Policy,
    agents: &[Candidate],
    text: &str,
    now: u64,
    turns: &mut Turns,
) -> Option<Choice> {
    let words = words(text);
    let matched = policy.rules.iter().find_map(|rule| {
        rule.keywords
            .iter()
            .find(|k| contains_keyword(&words, k))
            .map(|k| (rule.team.clone(), format!("keyword {k:?}")))
    });
    let mut attempts: Vec<(Option<String>, String)> = Vec::new();
    match matched {
        Some((team, why)) => {
            attempts.push((Some(team), why));
            if let Some(fallback) = &policy.fallback_team {
                attempts.push((
                    Some(fallback.clone()),
                    "its team is unavailable: fallback team".to_owned(),
                ));
            }
        }
        None => attempts.push((
            policy.fallback_team.clone(),
            "no rule matched: fallback".to_owned(),
        )),
    }
    for (team, why) in attempts {
        let pool: Vec<&Candidate> = agents
            .iter()
            .filter(|a| team.as_ref().is_none_or(|t| a.teams.contains(t)))
            .filter(|a| available(policy, a, now))
            .collect();
        let bots: Vec<&Candidate> = pool
            .iter()
            .copied()
            .filter(|a| a.kind == AgentKind::Bot)
            .collect();
        let pool = if policy.bot_first && !bots.is_empty() {
            bots
        } else {
            pool
        };
        let label = team.as_deref().unwrap_or("everyone");
        if let Some(agent) = pick(policy.strategy, &pool, label, turns) {
            return Some(Choice {
                device: agent.device,
                name: agent.name.clone(),
                reason: format!("{why} -> team {label} -> {}", agent.name),
            });
        }
    }
    None
}

/// Picks who takes over from `requester` for a handoff request: a named agent; a team's
/// humans (else its bots other than the requester); or any human (of the handoff team, if
/// set). Humans only within business hours. `None`: nobody fits now.
#[must_use]
pub fn handoff(
    policy: &Policy,
    agents: &[Candidate],
    target: &HandoffTarget,
    requester: DeviceId,
    now: u64,
    turns: &mut Turns,
) -> Option<Choice> {
    let fits = |a: &&Candidate| a.device != requester && available(policy, a, now);
    let (pool, label): (Vec<&Candidate>, String) = match target {
        HandoffTarget::Agent(device) => (
            agents
                .iter()
                .filter(|a| a.device == *device)
                .filter(fits)
                .collect(),
            format!("agent {device}"),
        ),
        HandoffTarget::Team(team) => {
            let team_pool: Vec<&Candidate> = agents
                .iter()
                .filter(|a| a.teams.contains(team))
                .filter(fits)
                .collect();
            let humans: Vec<&Candidate> = team_pool
                .iter()
                .copied()
                .filter(|a| a.kind == AgentKind::Human)
                .collect();
            (
                if humans.is_empty() { team_pool } else { humans },
                format!("team {team}"),
            )
        }
        HandoffTarget::AnyHuman => (
            agents
                .iter()
                .filter(|a| a.kind == AgentKind::Human)
                .filter(|a| {
                    policy
                        .handoff_team
                        .as_ref()
                        .is_none_or(|t| a.teams.contains(t))
                })
                .filter(fits)
                .collect(),
            "any human".to_owned(),
        ),
    };
    let agent = pick(policy.strategy, &pool, &format!("handoff {label}"), turns)?;
    Some(Choice {
        device: agent.device,
        name: agent.name.clone(),
        reason: format!("handoff to {label} -> {}", agent.name),
    })
}

fn available(policy: &Policy, agent: &Candidate, now: u64) -> bool {
    agent.kind == AgentKind::Bot || policy.hours.as_ref().is_none_or(|h| h.is_open(now))
}

fn pick<'a>(
    strategy: Strategy,
    pool: &[&'a Candidate],
    key: &str,
    turns: &mut Turns,
) -> Option<&'a Candidate> {
    let mut sorted: Vec<&Candidate> = pool.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    match strategy {
        Strategy::LeastBusy => sorted.into_iter().min_by_key(|a| a.load),
        Strategy::RoundRobin => {
            if sorted.is_empty() {
                return None;
            }
            let turn = turns.entry(key.to_owned()).or_insert(0);
            let len = u64::try_from(sorted.len()).unwrap_or(u64::MAX);
            let index = usize::try_from(*turn % len).unwrap_or(0);
            *turn = turn.wrapping_add(1);
            sorted.get(index).copied()
        }
    }
}

/// The lowercase words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A keyword matches a word; a keyword of several words matches them in sequence.
fn contains_keyword(words: &[String], keyword: &str) -> bool {
    let parts: Vec<&str> = keyword.split_whitespace().collect();
    !parts.is_empty()
        && words
            .windows(parts.len())
            .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BusinessHours, Rule};

    fn agent(name: &str, n: u8, kind: AgentKind, teams: &[&str], load: usize) -> Candidate {
        Candidate {
            name: name.to_owned(),
            device: DeviceId::from_bytes([n; 16]),
            kind,
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            load,
        }
    }

    fn cast() -> Vec<Candidate> {
        vec![
            agent("OrderBot", 1, AgentKind::Bot, &["orders"], 5),
            agent("Dana", 2, AgentKind::Human, &["orders", "billing"], 1),
            agent("Eve", 3, AgentKind::Human, &["billing"], 0),
            agent("FaqBot", 4, AgentKind::Bot, &["support"], 0),
        ]
    }

    fn policy() -> Policy {
        Policy {
            rules: vec![
                Rule {
                    keywords: vec!["order".into(), "where is my".into()],
                    team: "orders".into(),
                },
                Rule {
                    keywords: vec!["refund".into()],
                    team: "billing".into(),
                },
            ],
            bot_first: true,
            strategy: Strategy::LeastBusy,
            fallback_team: Some("support".into()),
            handoff_team: None,
            hours: None,
        }
    }

    const MONDAY_NOON_UTC: u64 = 1_795_435_200;

    #[test]
    fn keywords_pick_the_team_and_bots_go_first() {
        let choice = route(
            &policy(),
            &cast(),
            "Where is ORDER 42?",
            0,
            &mut Turns::new(),
        )
        .unwrap();
        assert_eq!(choice.name, "OrderBot");
        assert!(
            choice.reason.contains("keyword \"order\""),
            "{}",
            choice.reason
        );
        // Phrases match as word sequences, not substrings.
        let choice = route(
            &policy(),
            &cast(),
            "where is my parcel",
            0,
            &mut Turns::new(),
        )
        .unwrap();
        assert_eq!(choice.name, "OrderBot");
        let choice = route(&policy(), &cast(), "reorder please", 0, &mut Turns::new()).unwrap();
        assert_eq!(choice.name, "FaqBot", "'reorder' is not the word 'order'");
    }

    #[test]
    fn without_bot_first_the_least_busy_agent_wins() {
        let mut p = policy();
        p.bot_first = false;
        let choice = route(&p, &cast(), "my order", 0, &mut Turns::new()).unwrap();
        assert_eq!(choice.name, "Dana", "load 1 beats OrderBot's 5");
    }

    #[test]
    fn no_rule_goes_to_the_fallback_team_and_an_empty_team_falls_back() {
        let choice = route(&policy(), &cast(), "hello", 0, &mut Turns::new()).unwrap();
        assert_eq!(choice.name, "FaqBot");
        // Billing has only humans; after hours nobody there: the fallback team takes it.
        let mut p = policy();
        p.hours = Some(BusinessHours {
            days: vec![0, 1, 2, 3, 4],
            open: 9 * 60,
            close: 17 * 60,
            utc_offset_minutes: 0,
        });
        let night = MONDAY_NOON_UTC + 10 * 3600;
        let choice = route(&p, &cast(), "refund please", night, &mut Turns::new()).unwrap();
        assert_eq!(choice.name, "FaqBot");
        assert!(choice.reason.contains("fallback"), "{}", choice.reason);
        let choice = route(
            &p,
            &cast(),
            "refund please",
            MONDAY_NOON_UTC,
            &mut Turns::new(),
        )
        .unwrap();
        assert_eq!(choice.name, "Eve");
        // No fallback and nobody available: the admin keeps the thread.
        p.fallback_team = None;
        assert_eq!(
            route(&p, &cast(), "refund please", night, &mut Turns::new()),
            None
        );
    }

    #[test]
    fn round_robin_takes_turns_per_team() {
        let mut p = policy();
        p.strategy = Strategy::RoundRobin;
        p.bot_first = false;
        let mut turns = Turns::new();
        let names: Vec<String> = (0..4)
            .map(|_| route(&p, &cast(), "refund", 0, &mut turns).unwrap().name)
            .collect();
        assert_eq!(names, ["Dana", "Eve", "Dana", "Eve"]);
    }

    #[test]
    fn handoffs_prefer_humans_and_never_the_requester() {
        let bot = DeviceId::from_bytes([1; 16]);
        let p = policy();
        let mut turns = Turns::new();
        let to_team = handoff(
            &p,
            &cast(),
            &HandoffTarget::Team("orders".into()),
            bot,
            0,
            &mut turns,
        );
        assert_eq!(to_team.unwrap().name, "Dana");
        let any = handoff(&p, &cast(), &HandoffTarget::AnyHuman, bot, 0, &mut turns).unwrap();
        assert_eq!(any.name, "Eve", "least busy human");
        let named = HandoffTarget::Agent(DeviceId::from_bytes([3; 16]));
        assert_eq!(
            handoff(&p, &cast(), &named, bot, 0, &mut turns)
                .unwrap()
                .name,
            "Eve"
        );
        // Asking for itself, or for nobody that exists, finds no one.
        assert_eq!(
            handoff(&p, &cast(), &HandoffTarget::Agent(bot), bot, 0, &mut turns),
            None
        );
        let nobody = HandoffTarget::Team("legal".into());
        assert_eq!(handoff(&p, &cast(), &nobody, bot, 0, &mut turns), None);
    }
}
