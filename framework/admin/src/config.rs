//! `entity.toml`: who the admin is, where its keys are, and the routing policy.
//!
//! ```toml
//! entity = "acme"
//! display_name = "Acme"
//! relay = "http://127.0.0.1:8700"
//! keystore = "acme-admin.keystore"   # relative paths are relative to this file
//! key_file = "acme-admin.key"        # or: passphrase_env = "ACME_PASSPHRASE"
//! store = "sqlite://acme-admin.db"    # threads in a database, a row each (or postgres://...);
//!                                    # without it, the whole state is in the keystore
//! audit_log = "acme-audit.jsonl"
//! credential_days = 30
//! old_epoch_grace_secs = 600         # old-epoch messages accepted this long after a new epoch
//!
//! [routing]
//! bot_first = true                   # a bot takes new threads when one fits; humans after
//! strategy = "least_busy"            # or "round_robin"
//! fallback_team = "support"          # when no rule matches
//! handoff_team = "humans"            # for handoff requests to "any human"
//!
//! [hours]                            # humans take threads only then; bots always
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! open = "09:00"
//! close = "17:00"
//! utc_offset_minutes = 60
//!
//! [[rules]]                          # the first rule with a keyword in the first message wins
//! keywords = ["order", "shipping"]
//! team = "orders"
//!
//! [history]                          # history grants
//! on_route = true                    # the routed agent reads what the customer wrote first
//!                                    # (the default; false keeps it from the agent)
//! on_handoff = true                  # whoever takes over reads the conversation so far
//!                                    # (off by default)
//! max_messages = 100
//! ```
//!
//! Agents are not listed here: `switchboard admin add-agent` registers them (with their teams)
//! in the admin's keystore, because each one carries a credential the admin signed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_client::KeystoreSecret;
use switchboard_protocol::EntityId;

use crate::error::AdminError;

/// The admin's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The entity.
    pub entity: EntityId,
    /// What customers see.
    pub display_name: String,
    /// The relay URL.
    pub relay: String,
    /// The admin device's keystore.
    pub keystore: PathBuf,
    /// What unlocks the keystore.
    pub unlock: Unlock,
    /// Where the admin device keeps its threads and changing state, a row per thread: a
    /// database URL (`sqlite://PATH`, a relative path taken from the config file's directory,
    /// or `postgres://...`), opened by the program running the admin (the `switchboard` CLI
    /// opens it with the bot SDK's store). `None`: everything is in the keystore, which is then
    /// rewritten at every event (fine for a few threads, slow for thousands).
    pub store: Option<String>,
    /// The audit log (JSON lines, appended).
    pub audit_log: PathBuf,
    /// How long issued agent credentials are valid, in days.
    pub credential_days: u64,
    /// The routing policy.
    pub policy: Policy,
    /// When agents get the earlier messages of a thread.
    pub history: History,
    /// How long, in seconds after the admin installed a thread's next epoch, it still accepts
    /// messages of the older epoch (late deliveries); later ones are refused and audited as
    /// `late_message`. Default 600.
    pub old_epoch_grace_secs: u64,
}

/// History grants: when an agent joining a thread gets its earlier messages. By default the
/// agent a new thread is routed to reads what the customer wrote before (the question that
/// routed it); whoever takes a thread over later reads it from the epoch it joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// Grant the messages before routing to the agent a new thread is routed to.
    pub on_route: bool,
    /// Grant the conversation so far to whoever takes a thread over (handoff, transfer, an
    /// agent added to a group).
    pub on_handoff: bool,
    /// The most messages one grant carries (the latest ones).
    pub max_messages: usize,
    /// Where the admin logs the ciphertexts it may grant later.
    pub dir: PathBuf,
}

/// Where the keystore secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unlock {
    /// A key file.
    KeyFile(PathBuf),
    /// A passphrase in this environment variable.
    PassphraseEnv(String),
}

impl Unlock {
    /// The secret.
    ///
    /// # Errors
    /// [`AdminError::Config`] if the environment variable is not set.
    pub fn secret(&self) -> Result<KeystoreSecret, AdminError> {
        match self {
            Self::KeyFile(path) => Ok(KeystoreSecret::KeyFile(path.clone())),
            Self::PassphraseEnv(name) => std::env::var(name)
                .map(KeystoreSecret::passphrase)
                .map_err(|_| AdminError::Config {
                    path: PathBuf::new(),
                    detail: format!("the keystore passphrase variable {name} is not set"),
                }),
        }
    }
}

/// How threads are routed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keyword rules, in order.
    pub rules: Vec<Rule>,
    /// Bots before humans.
    pub bot_first: bool,
    /// How to pick among fitting agents.
    pub strategy: Strategy,
    /// The team for threads no rule matches (`None`: any agent).
    pub fallback_team: Option<String>,
    /// The team for handoffs to "any human" (`None`: any human).
    pub handoff_team: Option<String>,
    /// When humans take threads (`None`: always).
    pub hours: Option<BusinessHours>,
}

/// A keyword rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Lowercase keywords; one found as a word in the message selects the team.
    pub keywords: Vec<String>,
    /// The team.
    pub team: String,
}

/// How to pick one agent among those that fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent in the fewest threads (ties: by name).
    #[default]
    LeastBusy,
    /// Each in turn, per team.
    RoundRobin,
}

/// Opening hours for human agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessHours {
    /// Open days, 0 = Monday.
    pub days: Vec<u8>,
    /// Opening minute of the day (local time).
    pub open: u16,
    /// Closing minute of the day (local time), after `open`.
    pub close: u16,
    /// Local time minus UTC, in minutes.
    pub utc_offset_minutes: i32,
}

impl BusinessHours {
    /// Whether `unix_secs` falls within the hours.
    #[must_use]
    pub fn is_open(&self, unix_secs: u64) -> bool {
        let local = i64::try_from(unix_secs)
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(self.utc_offset_minutes) * 60);
        let days = local.div_euclid(86_400);
        let minute = local.rem_euclid(86_400) / 60;
        // 1970-01-01 was a Thursday (3, counting Monday as 0).
        let weekday = (days + 3).rem_euclid(7);
        self.days.iter().any(|d| i64::from(*d) == weekday)
            && minute >= i64::from(self.open)
            && minute < i64::from(self.close)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    entity: String,
    display_name: String,
    relay: String,
    keystore: PathBuf,
    store: Option<String>,
    key_file: Option<PathBuf>,
    passphrase_env: Option<String>,
    audit_log: Option<PathBuf>,
    #[serde(default = "default_credential_days")]
    credential_days: u64,
    #[serde(default)]
    routing: RoutingFile,
    hours: Option<HoursFile>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    history: HistoryFile,
    #[serde(default = "default_old_epoch_grace_secs")]
    old_epoch_grace_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    #[serde(default = "default_on_route")]
    on_route: bool,
    #[serde(default)]
    on_handoff: bool,
    max_messages: Option<usize>,
    dir: Option<PathBuf>,
}

impl Default for HistoryFile {
    fn default() -> Self {
        Self {
            on_route: default_on_route(),
            on_handoff: false,
            max_messages: None,
            dir: None,
        }
    }
}

/// The routed agent reads the messages that routed the thread unless the entity says no.
fn default_on_route() -> bool {
    true
}

const fn default_credential_days() -> u64 {
    30
}

const fn default_old_epoch_grace_secs() -> u64 {
    switchboard_protocol::DEFAULT_OLD_EPOCH_GRACE_SECS
}

/// The longest grace for old-epoch messages: one day (a withheld commit must not keep an old
/// epoch alive for long).
const MAX_OLD_EPOCH_GRACE_SECS: u64 = 86_400;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingFile {
    #[serde(default = "yes")]
    bot_first: bool,
    #[serde(default)]
    strategy: Strategy,
    fallback_team: Option<String>,
    handoff_team: Option<String>,
}

const fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursFile {
    days: Vec<String>,
    open: String,
    close: String,
    #[serde(default)]
    utc_offset_minutes: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    keywords: Vec<String>,
    team: String,
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`AdminError::Config`] naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, AdminError> {
        let text = std::fs::read_to_string(path).map_err(|e| AdminError::Config {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|detail| {
            AdminError::Config {
                path: path.to_owned(),
                detail,
            }
        })
    }

    /// Parses TOML text; relative paths are taken from `base`.
    ///
    /// # Errors
    /// What is wrong, as a sentence.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let entity = EntityId::new(file.entity).map_err(|e| format!("entity: {e}"))?;
        if file.display_name.trim().is_empty() {
            return Err("display_name must not be empty".to_owned());
        }
        let unlock = match (file.key_file, file.passphrase_env) {
            (Some(key), None) => Unlock::KeyFile(base.join(key)),
            (None, Some(var)) => Unlock::PassphraseEnv(var),
            (None, None) => {
                return Err("set key_file or passphrase_env to unlock the keystore".to_owned());
            }
            (Some(_), Some(_)) => {
                return Err("set only one of key_file and passphrase_env".to_owned());
            }
        };
        if file.credential_days == 0 || file.credential_days > 366 {
            return Err("credential_days must be between 1 and 366".to_owned());
        }
        if file.old_epoch_grace_secs > MAX_OLD_EPOCH_GRACE_SECS {
            return Err(format!(
                "old_epoch_grace_secs must be at most {MAX_OLD_EPOCH_GRACE_SECS} (one day)"
            ));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, rule) in file.rules.into_iter().enumerate() {
            let keywords: Vec<String> = rule
                .keywords
                .iter()
                .map(|k| k.trim().to_lowercase())
                .collect();
            if keywords.is_empty() || keywords.iter().any(String::is_empty) {
                return Err(format!("rules[{i}]: keywords must be non-empty words"));
            }
            check_team(&rule.team).map_err(|e| format!("rules[{i}]: {e}"))?;
            rules.push(Rule {
                keywords,
                team: rule.team,
            });
        }
        for team in [&file.routing.fallback_team, &file.routing.handoff_team]
            .into_iter()
            .flatten()
        {
            check_team(team).map_err(|e| format!("routing: {e}"))?;
        }
        let hours = file.hours.as_ref().map(parse_hours).transpose()?;
        let audit_log = file
            .audit_log
            .unwrap_or_else(|| PathBuf::from(format!("{entity}-audit.jsonl")));
        let max_messages = file.history.max_messages.unwrap_or(100);
        if max_messages == 0 || max_messages > switchboard_protocol::MAX_GRANT_MESSAGES {
            return Err(format!(
                "history.max_messages must be between 1 and {}",
                switchboard_protocol::MAX_GRANT_MESSAGES
            ));
        }
        let history = History {
            on_route: file.history.on_route,
            on_handoff: file.history.on_handoff,
            max_messages,
            dir: base.join(
                file.history
                    .dir
                    .unwrap_or_else(|| PathBuf::from(format!("{entity}-history"))),
            ),
        };
        Ok(Self {
            entity,
            display_name: file.display_name,
            relay: file.relay,
            keystore: base.join(file.keystore),
            unlock,
            store: file.store.map(|url| store_url(&url, base)).transpose()?,
            audit_log: base.join(audit_log),
            credential_days: file.credential_days,
            policy: Policy {
                rules,
                bot_first: file.routing.bot_first,
                strategy: file.routing.strategy,
                fallback_team: file.routing.fallback_team,
                handoff_team: file.routing.handoff_team,
                hours,
            },
            history,
            old_epoch_grace_secs: file.old_epoch_grace_secs,
        })
    }
}

/// The store URL of the config file, a relative `sqlite://` path taken from `base`.
fn store_url(url: &str, base: &Path) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("store must be a database URL (sqlite://PATH or postgres://...)".to_owned());
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() && !path.starts_with('/') && !path.starts_with(':') => {
            Ok(format!("sqlite://{}", base.join(path).display()))
        }
        _ => Ok(url.to_owned()),
    }
}

/// A team name: 1 to 64 characters of `a-z 0-9 _ -`.
///
/// # Errors
/// Why not.
pub fn check_team(team: &str) -> Result<(), String> {
    if team.is_empty()
        || team.len() > 64
        || !team
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "team {team:?} must have 1 to 64 characters of a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(())
}

fn parse_hours(hours: &HoursFile) -> Result<BusinessHours, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut days = Vec::new();
    for day in &hours.days {
        let index = DAYS
            .iter()
            .position(|d| d.eq_ignore_ascii_case(day))
            .ok_or_else(|| format!("hours.days: {day:?} is not one of {DAYS:?}"))?;
        days.push(u8::try_from(index).map_err(|e| e.to_string())?);
    }
    let open = minute_of_day(&hours.open).map_err(|e| format!("hours.open: {e}"))?;
    let close = minute_of_day(&hours.close).map_err(|e| format!("hours.close: {e}"))?;
    if close <= open {
        return Err("hours.close must be after hours.open".to_owned());
    }
    if hours.utc_offset_minutes.abs() > 14 * 60 {
        return Err("hours.utc_offset_minutes must be within ±14 hours".to_owned());
    }
    Ok(BusinessHours {
        days,
        open,
        close,
        utc_offset_minutes: hours.utc_offset_minutes,
    })
}

/// "HH:MM" as minutes since midnight; "24:00" is the end of the day.
fn minute_of_day(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time like \"09:30\"");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        entity = "acme"
        display_name = "Acme"
        relay = "http://127.0.0.1:8700"
        keystore = "admin.keystore"
        key_file = "admin.key"

        [routing]
        strategy = "round_robin"
        fallback_team = "support"

        [hours]
        days = ["mon", "tue", "wed", "thu", "fri"]
        open = "09:00"
        close = "17:30"
        utc_offset_minutes = 60

        [[rules]]
        keywords = ["Order", "shipping"]
        team = "orders"
    "#;

    #[test]
    fn a_full_config_parses_with_paths_relative_to_the_file() {
        let config = Config::parse(FULL, Path::new("/etc/acme")).unwrap();
        assert_eq!(config.keystore, Path::new("/etc/acme/admin.keystore"));
        assert_eq!(
            config.unlock,
            Unlock::KeyFile(PathBuf::from("/etc/acme/admin.key"))
        );
        assert_eq!(config.audit_log, Path::new("/etc/acme/acme-audit.jsonl"));
        assert_eq!(config.policy.strategy, Strategy::RoundRobin);
        assert!(config.policy.bot_first, "bots first by default");
        assert_eq!(config.policy.rules[0].keywords, ["order", "shipping"]);
        let hours = config.policy.hours.unwrap();
        assert_eq!((hours.open, hours.close), (540, 1050));
    }

    #[test]
    fn a_store_url_is_optional_and_a_relative_sqlite_path_is_taken_from_the_file() {
        let config = Config::parse(FULL, Path::new("/etc/acme")).unwrap();
        assert_eq!(config.store, None, "everything in the keystore by default");
        let with = |store: &str| {
            let text = FULL.replace(
                "key_file = \"admin.key\"",
                &format!("key_file = \"admin.key\"\nstore = \"{store}\""),
            );
            Config::parse(&text, Path::new("/etc/acme")).map(|c| c.store)
        };
        assert_eq!(
            with("sqlite://admin.db").unwrap().as_deref(),
            Some("sqlite:///etc/acme/admin.db")
        );
        for kept in [
            "sqlite:///var/lib/acme/admin.db",
            "sqlite::memory:",
            "postgres://acme@db/acme",
        ] {
            assert_eq!(with(kept).unwrap().as_deref(), Some(kept));
        }
        assert!(with(" ").unwrap_err().contains("database URL"));
    }

    #[test]
    fn the_routed_agent_reads_the_routing_messages_unless_the_entity_turns_it_off() {
        let config = Config::parse(FULL, Path::new("/etc/acme")).unwrap();
        assert!(config.history.on_route, "on by default, without [history]");
        assert!(!config.history.on_handoff, "handoff grants stay opt-in");
        let partial = format!("{FULL}\n[history]\nmax_messages = 10\n");
        let config = Config::parse(&partial, Path::new("/etc/acme")).unwrap();
        assert!(config.history.on_route, "on by default, with [history]");
        let off = format!("{FULL}\n[history]\non_route = false\n");
        let config = Config::parse(&off, Path::new("/etc/acme")).unwrap();
        assert!(!config.history.on_route, "the entity turns it off");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                FULL.replace("key_file = \"admin.key\"", ""),
                "key_file or passphrase_env",
            ),
            (
                FULL.replace("\"round_robin\"", "\"random\""),
                "unknown variant",
            ),
            (FULL.replace("\"17:30\"", "\"08:00\""), "after hours.open"),
            (FULL.replace("\"09:00\"", "\"9am\""), "hours.open"),
            (FULL.replace("\"mon\",", "\"monday\","), "hours.days"),
            (
                FULL.replace("team = \"orders\"", "team = \"Orders!\""),
                "rules[0]",
            ),
            (format!("{FULL}\nsurprise = 1"), "unknown field"),
            (FULL.replace("entity = \"acme\"", "entity = \"\""), "entity"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    /// Mutated configs (bytes flipped, cut, inserted) give a config or a clear error, never a
    /// panic.
    #[test]
    fn mutated_configs_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bytes = FULL.as_bytes().to_vec();
            let at = usize::try_from(next() % bytes.len() as u64).unwrap();
            let byte = u8::try_from(next() % 256).unwrap();
            match next() % 3 {
                0 => bytes[at] ^= 1 << (byte % 8),
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = Config::parse(&text, Path::new(".")) {
                assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn business_hours_follow_the_offset_and_the_weekday() {
        let hours = BusinessHours {
            days: vec![0, 1, 2, 3, 4],
            open: 9 * 60,
            close: 17 * 60,
            utc_offset_minutes: 60,
        };
        // 2026-11-23 is a Monday. 08:30 UTC = 09:30 local: open.
        let monday_0830_utc = 1_795_422_600;
        assert!(hours.is_open(monday_0830_utc));
        // 07:30 UTC = 08:30 local: closed.
        assert!(!hours.is_open(monday_0830_utc - 3600));
        // 16:30 UTC = 17:30 local: closed.
        assert!(!hours.is_open(monday_0830_utc + 8 * 3600));
        // Saturday 09:30 local: closed.
        assert!(!hours.is_open(monday_0830_utc + 5 * 86_400));
    }
}
