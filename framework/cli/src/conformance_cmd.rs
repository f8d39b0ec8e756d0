//! `switchboard conformance -- CMD ARGS`: the bot conformance suite against a bot process
//! (see docs/conformance.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchboard_testkit::conformance::{Check, Expect, ProcessBot, Suite};

use crate::out;

/// The longest time limit the command takes, in seconds.
const MAX_SECS: u64 = 3600;

/// `switchboard conformance`.
#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// A question the bot answers with one message (repeat it: the first routes every check's
    /// threads, the others follow in a conversation). Default: `hello`, any answer.
    #[arg(long = "ask", value_name = "TEXT")]
    asks: Vec<String>,
    /// What the answer to the --ask in the same position must contain, ignoring case (fewer
    /// than --ask: the rest accept any answer).
    #[arg(long = "expect", value_name = "TEXT")]
    expects: Vec<String>,
    /// A customer's first message after which the bot must ask the admin for a handoff.
    #[arg(long, value_name = "TEXT", conflicts_with = "never_hands_off")]
    hand_off_on: Option<String>,
    /// The bot never hands off, for this reason (the handoff check is skipped).
    #[arg(long, value_name = "WHY")]
    never_hands_off: Option<String>,
    /// A team the bot hands off to; each gets a human agent (repeat it; default: humans).
    #[arg(long = "human-team", value_name = "TEAM")]
    human_teams: Vec<String>,
    /// How long a new thread may wait for its answer in answers_in_time.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    reply_within: u64,
    /// How long the other checks wait for an answer (a restart of the bot included).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    answer_wait: u64,
    /// Run only this check (repeat it).
    #[arg(long = "only", value_name = "CHECK")]
    only: Vec<String>,
    /// Skip this check (repeat it).
    #[arg(long = "skip", value_name = "CHECK")]
    skip: Vec<String>,
    /// Write the report as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// The suite's name in the report (default: the command's file name).
    #[arg(long)]
    name: Option<String>,
    /// Print the checks and what each proves, and exit.
    #[arg(long)]
    list: bool,
    /// The bot's command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present = "list")]
    command: Vec<String>,
}

/// The check named `name`, or an error naming them all.
fn check(name: &str) -> Result<Check, String> {
    Check::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
        format!("no check named {name:?}; the checks: {}", names.join(", "))
    })
}

/// `secs` as a duration, if it is a sensible time limit.
fn limit(flag: &str, secs: u64) -> Result<Duration, String> {
    if secs == 0 || secs > MAX_SECS {
        return Err(format!(
            "{flag} must be 1 to {MAX_SECS} seconds, not {secs}"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// The suite the arguments describe (everything but running it).
fn suite(args: &ConformanceArgs) -> Result<Suite, String> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err("give the bot's command after --".to_owned());
    };
    if args.expects.len() > args.asks.len() {
        return Err(format!(
            "{} --expect for {} --ask: each --expect goes with the --ask in its position",
            args.expects.len(),
            args.asks.len()
        ));
    }
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
    });
    let mut suite = Suite::new(name, ProcessBot::new(program, rest.iter().cloned()))
        .reply_within(limit("--reply-within", args.reply_within)?)
        .answer_wait(limit("--answer-wait", args.answer_wait)?);
    for (i, ask) in args.asks.iter().enumerate() {
        let expect = args
            .expects
            .get(i)
            .map_or(Expect::Anything, |e| Expect::contains(e.as_str()));
        suite = suite.ask(ask.as_str(), expect);
    }
    if let Some(trigger) = &args.hand_off_on {
        suite = suite.hand_off_on(trigger.as_str());
    }
    if let Some(why) = &args.never_hands_off {
        suite = suite.never_hands_off(why.as_str());
    }
    if !args.human_teams.is_empty() {
        let teams: Vec<&str> = args.human_teams.iter().map(String::as_str).collect();
        suite = suite.human_teams(&teams);
    }
    if !args.only.is_empty() {
        let only = args
            .only
            .iter()
            .map(|n| check(n))
            .collect::<Result<Vec<_>, _>>()?;
        suite = suite.only(&only);
    }
    for name in &args.skip {
        suite = suite.skip(check(name)?, "skipped on the command line (--skip)");
    }
    Ok(suite)
}

pub(crate) async fn run(args: ConformanceArgs) -> Result<(), String> {
    if args.list {
        for check in Check::ALL {
            out(&format!("{:<44} {}", check.name(), check.proves()));
        }
        return Ok(());
    }
    let suite = suite(&args)?;
    let report = suite.await;
    out(&report.table());
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit_xml())
            .map_err(|e| format!("writing the JUnit report to {}: {e}", path.display()))?;
    }
    if report.passed() {
        Ok(())
    } else {
        let failed: Vec<&str> = report.failed().iter().map(|c| c.name()).collect();
        Err(format!(
            "{} of {} conformance checks failed: {}",
            failed.len(),
            report.results.len(),
            failed.join(", ")
        ))
    }
}
