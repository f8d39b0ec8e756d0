//! The checks themselves. Each runs in a world of its own (a relay, the admin, the bot under
//! test behind a fault-injecting proxy), so that one check's failure cannot spill into another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_admin::Outcome;
use switchboard_protocol::ThreadId;
use tokio::time::Instant;

use super::customer::Talker;
use super::launch::{BotEnv, Launched, Launcher, RustBot};
use super::{BOT_NAME, Check, HUMAN_NAME, PEER_NAME, Suite};
use crate::hostile::{HostileRelay, Method, StatusCode};
use crate::world::{AgentSpec, Routing, World};

/// How long customers keep listening after they were answered, for duplicates and loops.
const LINGER: Duration = Duration::from_secs(3);

/// How many times the proxy delivers each inbox item of the bot in [`Check::ExactlyOnce`].
const REDELIVERIES: u32 = 3;

/// How long the bots of [`Check::NoBotLoop`] are watched.
const LOOP_WATCH: Duration = Duration::from_secs(8);

/// The most messages the bot under test may send in the group of [`Check::NoBotLoop`]: one
/// answer to each customer message and a few to the other bot.
const LOOP_LIMIT: usize = 6;

/// A check's world: the relay, the admin, the bot under test behind the proxy.
pub(crate) struct Scene {
    pub(crate) world: World,
    pub(crate) hostile: HostileRelay,
    env: BotEnv,
    launcher: Arc<dyn Launcher>,
    bot: Option<Box<dyn Launched>>,
    /// How long customers wait for an answer.
    answer_wait: Duration,
    /// Other bots of the scene (the peer of [`Check::NoBotLoop`]).
    others: Vec<Box<dyn Launched>>,
}

impl Scene {
    async fn new(suite: &Suite, check: Check) -> Result<Self, String> {
        Self::build(
            check.name(),
            Arc::clone(&suite.launcher),
            suite.answer_wait,
            &suite.human_teams,
            &suite.handoff_team,
            check == Check::NoBotLoop,
        )
        .await
    }

    /// A world named `name` with the bot `launcher` starts enrolled as [`BOT_NAME`], a human
    /// for each of `human_teams`, handoffs to any human going to `handoff_team`, and
    /// [`PEER_NAME`] enrolled too if `peer`.
    pub(crate) async fn build(
        name: &str,
        launcher: Arc<dyn Launcher>,
        answer_wait: Duration,
        human_teams: &[String],
        handoff_team: &str,
        peer: bool,
    ) -> Result<Self, String> {
        let mut routing = Routing::default();
        handoff_team.clone_into(&mut routing.handoff_team);
        let mut agents = vec![AgentSpec::bot(BOT_NAME, &routing.fallback_team)];
        for (i, team) in human_teams.iter().enumerate() {
            agents.push(AgentSpec::human(&format!("{HUMAN_NAME}{i}"), team));
        }
        if peer {
            agents.push(AgentSpec::bot(PEER_NAME, "peers"));
        }
        let world = World::start(name, &routing, &agents)
            .await
            .map_err(|e| e.to_string())?;
        let hostile = HostileRelay::start(world.url()).await;
        let me = world.enrollment(BOT_NAME).map_err(|e| e.to_string())?;
        let env = BotEnv {
            relay: hostile.url(),
            entity: world.entity().to_string(),
            name: BOT_NAME.to_owned(),
            keystore: me.keystore.clone(),
            key_file: me.key_file.clone(),
            store: format!("sqlite://{}", world.dir().join("bot-state.db").display()),
            instance: "conformance-1".to_owned(),
            admin_fingerprint: world.admin_fingerprint().to_string(),
        };
        Ok(Self {
            world,
            hostile,
            env,
            launcher,
            bot: None,
            answer_wait,
            others: Vec::new(),
        })
    }

    /// Starts the bot under test.
    pub(crate) async fn start(&mut self) -> Result<(), String> {
        self.bot = Some(self.launcher.launch(&self.env).await?);
        Ok(())
    }

    /// Kills the bot under test (as a crash) and starts it again on the same keystore and
    /// store.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        if let Some(bot) = self.bot.take() {
            bot.kill().await;
        }
        self.start().await
    }

    /// The bot's device.
    pub(crate) fn bot_device(&self) -> Result<switchboard_protocol::DeviceId, String> {
        Ok(self
            .world
            .enrollment(BOT_NAME)
            .map_err(|e| e.to_string())?
            .device)
    }

    /// A customer whose first message is `first`.
    pub(crate) async fn customer(&self, first: &str) -> Result<Talker, String> {
        Talker::open(&self.world, first, self.answer_wait).await
    }

    /// Stops the bots and the world; a bot that fails to stop is reported.
    pub(crate) async fn finish(mut self) -> Result<(), String> {
        for other in self.others.drain(..) {
            other.kill().await;
        }
        let stopped = match self.bot.take() {
            Some(bot) => bot.stop().await,
            None => Ok(()),
        };
        let _ = self.world.stop().await;
        stopped.map_err(|e| format!("the bot did not stop cleanly: {e}"))
    }

    /// The bot's log, for a failure.
    fn log_tail(&self) -> String {
        self.bot.as_ref().map(|b| b.log_tail()).unwrap_or_default()
    }
}

/// Runs `check` for `suite`: `Ok` if it passed, `Err(why)` if not.
pub(crate) async fn run(suite: &Suite, check: Check) -> Result<(), String> {
    let mut scene = Scene::new(suite, check).await?;
    if let Err(e) = scene.start().await {
        let _ = scene.finish().await;
        return Err(e);
    }
    let outcome = match check {
        Check::AnswersForwardedThread => answers_forwarded_thread(suite, &scene).await,
        Check::ReadsRoutingMessage => reads_routing_message(suite, &scene).await,
        Check::ExactlyOnce => exactly_once(suite, &mut scene).await,
        Check::AnswersInTime => answers_in_time(suite, &scene).await,
        Check::HandsOffWhenAsked => hands_off_when_asked(suite, &scene).await,
        Check::NoBotLoop => no_bot_loop(suite, &mut scene).await,
        Check::HonoursRetryAfter => honours_retry_after(suite, &scene).await,
    };
    let outcome = outcome.map_err(|why| {
        let log = scene.log_tail();
        if log.is_empty() {
            why
        } else {
            format!("{why}\nthe bot's log ends:\n{log}")
        }
    });
    let finished = scene.finish().await;
    outcome.and(finished)
}

/// The first answer in a customer's thread, within the suite's answer wait.
async fn first_answer(customer: &mut Talker) -> Result<String, String> {
    let wait = customer.wait;
    if !customer.until(wait, |c| c.count_of(BOT_NAME) > 0).await {
        return Err(not_answered(customer, "its first message", wait));
    }
    Ok(customer
        .texts_of(BOT_NAME)
        .first()
        .map(|t| (*t).to_owned())
        .unwrap_or_default())
}

/// Why a customer's wait failed: what it got instead.
fn not_answered(customer: &Talker, what: &str, within: Duration) -> String {
    let mut why = format!("no answer from {BOT_NAME} to {what} within {within:?}");
    if let Some(other) = customer
        .said
        .iter()
        .find(|s| s.name != BOT_NAME || s.kind != switchboard_protocol::AgentKind::Bot)
    {
        why.push_str(&format!(
            "; the customer heard {:?} (a {:?}) say {:?}",
            other.name, other.kind, other.text
        ));
    }
    if let Some(error) = customer.errors.first() {
        why.push_str(&format!("; the customer's device failed: {error}"));
    }
    why
}

async fn answers_forwarded_thread(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let mut customer = scene.customer(&suite.first.text).await?;
    first_answer(&mut customer).await?;
    // Verified by the customer's device against the roster and the credential the admin
    // issued: an answer in the bot's name that is not the bot's own does not get here.
    Ok(())
}

async fn reads_routing_message(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let ask = &suite.first;
    let mut customer = scene.customer(&ask.text).await?;
    let answer = first_answer(&mut customer).await?;
    if ask.expect.matches(&answer) {
        Ok(())
    } else {
        Err(format!(
            "the answer to the message that routed the thread, {:?}, was {answer:?}: expected {}",
            ask.text, ask.expect
        ))
    }
}

/// Counts what each customer got: exactly as many answers as it asked for, never a
/// generation sealed twice (an equivocation).
fn exactly(customers: &[(&str, &Talker, usize)]) -> Result<(), String> {
    for (who, customer, want) in customers {
        let got = customer.count_of(BOT_NAME) + customer.overflow;
        if got != *want {
            return Err(format!(
                "{who} asked {want} question(s) and got {got} answer(s): {:?}",
                customer.texts_of(BOT_NAME)
            ));
        }
        if customer.equivocations > 0 {
            return Err(format!(
                "{who}'s device saw {} generation(s) sealed twice",
                customer.equivocations
            ));
        }
    }
    Ok(())
}

async fn exactly_once(suite: &Suite, scene: &mut Scene) -> Result<(), String> {
    scene.hostile.redeliver(scene.bot_device()?, REDELIVERIES);
    // The relay refuses a second message under a generation it stored another one for: the
    // customers never see it, the bot sealed it all the same.
    let resealed = Arc::new(AtomicUsize::new(0));
    scene.hostile.watch_answers({
        let resealed = Arc::clone(&resealed);
        Box::new(move |method, path, status| {
            if method == Method::POST
                && path.ends_with("/messages")
                && status == StatusCode::CONFLICT
            {
                resealed.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let mut first = scene.customer(&suite.first.text).await?;
    first_answer(&mut first).await?;
    // The later questions, each once the one before was answered.
    let (before, after) = suite.then.split_at(suite.then.len() / 2);
    for ask in before {
        answer_next(&mut first, &ask.text).await?;
    }
    // A second customer asks, and the bot is killed 50 ms later (often while it works on
    // the question).
    let mut second = scene.customer(&suite.first.text).await?;
    second.pump(Duration::from_millis(50)).await;
    scene.restart().await?;
    first_answer(&mut second).await?;
    for ask in after {
        answer_next(&mut first, &ask.text).await?;
    }
    // A third, after the restart.
    let mut third = scene.customer(&suite.first.text).await?;
    first_answer(&mut third).await?;
    let deadline = Instant::now() + LINGER;
    while Instant::now() < deadline {
        first.pump(Duration::from_millis(200)).await;
        second.pump(Duration::from_millis(200)).await;
        third.pump(Duration::from_millis(200)).await;
    }
    exactly(&[
        ("the first customer", &first, 1 + suite.then.len()),
        ("the customer asking during the crash", &second, 1),
        ("the customer after the restart", &third, 1),
    ])?;
    match resealed.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(format!(
            "the relay refused {n} message(s) of the bot as a second message under a generation \
             it had already stored another one for: the bot sealed generations twice (it \
             answered again, differently, what it had answered before the crash)"
        )),
    }
}

/// Says `text` and waits for one more answer than the customer had.
async fn answer_next(customer: &mut Talker, text: &str) -> Result<(), String> {
    let had = customer.count_of(BOT_NAME);
    customer.say(text).await?;
    let wait = customer.wait;
    if customer.until(wait, |c| c.count_of(BOT_NAME) > had).await {
        Ok(())
    } else {
        Err(not_answered(customer, &format!("{text:?}"), wait))
    }
}

/// How many new threads [`Check::AnswersInTime`] times.
const TIMED_THREADS: usize = 3;

async fn answers_in_time(suite: &Suite, scene: &Scene) -> Result<(), String> {
    // One thread first, untimed: the bot's start and first connection are not its answer time.
    let mut warm = scene.customer(&suite.first.text).await?;
    first_answer(&mut warm).await?;
    for i in 0..TIMED_THREADS {
        let started = Instant::now();
        let mut customer = scene.customer(&suite.first.text).await?;
        if !customer
            .until(suite.reply_within, |c| c.count_of(BOT_NAME) > 0)
            .await
        {
            return Err(not_answered(
                &customer,
                &format!("the first message of thread {} of {TIMED_THREADS}", i + 1),
                suite.reply_within,
            ));
        }
        let took = started.elapsed();
        if took > suite.reply_within {
            return Err(format!(
                "thread {} of {TIMED_THREADS} was answered after {took:?}, more than {:?}",
                i + 1,
                suite.reply_within
            ));
        }
    }
    Ok(())
}

async fn hands_off_when_asked(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let Some(trigger) = &suite.handoff_on else {
        return Err("no trigger: the suite should have skipped this check".to_owned());
    };
    let bot = scene.bot_device()?;
    let mut customer = scene.customer(trigger).await?;
    let asked = scene
        .world
        .outcome(suite.answer_wait, |o| match o {
            Outcome::HandedOff { thread, from, .. }
            | Outcome::HandoffRefused { thread, from, .. } => {
                *thread == customer.thread && *from == bot
            }
            _ => false,
        })
        .await;
    match asked {
        Ok(Outcome::HandoffRefused { reason, .. }) => Err(format!(
            "the bot asked for a handoff the admin refused ({reason}): hand off to one of the teams {:?}",
            suite.human_teams
        )),
        Ok(_) => Ok(()),
        Err(_) => {
            customer.linger(Duration::from_secs(1)).await;
            Err(format!(
                "the bot did not ask for a handoff within {:?} of the customer saying {trigger:?}; it said {:?}",
                suite.answer_wait,
                customer.texts_of(BOT_NAME)
            ))
        }
    }
}

async fn no_bot_loop(suite: &Suite, scene: &mut Scene) -> Result<(), String> {
    let peer = scene
        .world
        .enrollment(PEER_NAME)
        .map_err(|e| e.to_string())?
        .clone();
    let peer_env = BotEnv {
        relay: scene.world.url().to_owned(),
        name: PEER_NAME.to_owned(),
        keystore: peer.keystore.clone(),
        key_file: peer.key_file.clone(),
        store: format!(
            "sqlite://{}",
            scene.world.dir().join("peer-state.db").display()
        ),
        instance: "peer-1".to_owned(),
        ..scene.env.clone()
    };
    scene
        .others
        .push(RustBot::new(super::peer::Parrot).launch(&peer_env).await?);
    let mut customer = scene.customer(&suite.first.text).await?;
    first_answer(&mut customer).await?;
    let epochs = customer.epochs;
    let thread: ThreadId = customer.thread;
    scene
        .world
        .add_to_group(thread, PEER_NAME)
        .await
        .map_err(|e| format!("adding the other bot to the thread: {e}"))?;
    if !customer
        .until(suite.answer_wait, |c| c.epochs > epochs)
        .await
    {
        return Err("the customer never saw the other bot join".to_owned());
    }
    customer.say(&suite.first.text).await?;
    let before = customer.count_of(BOT_NAME);
    customer.linger(LOOP_WATCH).await;
    let sent = customer.count_of(BOT_NAME) + customer.overflow - before;
    if customer.count_of(PEER_NAME) == 0 {
        return Err("the other bot never spoke in the group (the check could not run)".to_owned());
    }
    if sent > LOOP_LIMIT {
        return Err(format!(
            "in a group with another bot that answers everything, {BOT_NAME} sent {sent} messages in {LOOP_WATCH:?} after one customer message (at most {LOOP_LIMIT} allowed): it answers bots"
        ));
    }
    Ok(())
}

/// How many of the bot's requests [`Check::HonoursRetryAfter`] refuses.
const RATE_LIMITED: u32 = 3;
/// The `Retry-After` they carry, in seconds.
const RETRY_AFTER_SECS: u64 = 2;
/// How much sooner than `Retry-After` a request may come (clock and scheduling slack).
const RETRY_SLACK: Duration = Duration::from_millis(150);

/// A request's kind: its method and path without the query, thread ids replaced.
fn kind(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path
        .split('/')
        .map(|part| {
            if part.len() == 32 && part.chars().all(|c| c.is_ascii_hexdigit()) {
                "{id}"
            } else {
                part
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}

async fn honours_retry_after(suite: &Suite, scene: &Scene) -> Result<(), String> {
    // One answered thread first: the bot runs and is connected.
    let mut warm = scene.customer(&suite.first.text).await?;
    first_answer(&mut warm).await?;
    scene
        .hostile
        .fail_next(RATE_LIMITED, 429, Some(RETRY_AFTER_SECS));
    let mut customer = scene.customer(&suite.first.text).await?;
    first_answer(&mut customer).await?;
    let requests = scene.hostile.requests();
    let limited: Vec<_> = requests
        .iter()
        .filter(|r| r.fault == Some(StatusCode::TOO_MANY_REQUESTS))
        .collect();
    if limited.is_empty() {
        return Err(
            "the bot sent no request the proxy could refuse (the check could not run)".to_owned(),
        );
    }
    let wait = Duration::from_secs(RETRY_AFTER_SECS).saturating_sub(RETRY_SLACK);
    for refused in &limited {
        let what = kind(&refused.method, &refused.path);
        let again = requests.iter().find(|r| {
            r.at > refused.at
                && kind(&r.method, &r.path) == what
                && r.at.duration_since(refused.at) < wait
        });
        if let Some(again) = again {
            return Err(format!(
                "{what} was refused with 429 and Retry-After: {RETRY_AFTER_SECS}, and sent again {:?} later",
                again.at.duration_since(refused.at)
            ));
        }
    }
    Ok(())
}
