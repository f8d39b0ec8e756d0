//! The checks themselves. Each runs in a world of its own (a relay, the admin, the bot under
//! test behind a fault-injecting proxy), so that one check's failure cannot spill into another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_admin::Outcome;
use switchboard_protocol::api::{InboxItem, ItemKind};
use switchboard_protocol::{Content, DeviceId, ReceiptKind, ThreadId};
use tokio::time::Instant;

use super::customer::Talker;
use super::launch::{BotEnv, Launched, Launcher, RustBot};
use super::{BOT_NAME, Check, HUMAN_NAME, PEER_NAME, Suite};
use crate::hostile::{HostileRelay, Method, PostedMessage, Slip, StatusCode};
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

/// The words in a customer's first message that route the thread to [`BYSTANDER_NAME`]: its
/// join commit (a wrap for that human) is shown to the bot in [`Check::IgnoresForeignItems`].
pub(crate) const BYSTANDER_WORD: &str = "conformance bystander";
/// A human agent of a team of its own, [`BYSTANDER_TEAM`], in every check's world.
pub(crate) const BYSTANDER_NAME: &str = "Bystander";
/// The bystander's team (no other agent is in it).
const BYSTANDER_TEAM: &str = "conformance-bystanders";

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
            check == Check::RecoversAfterRelayRestart,
        )
        .await
    }

    /// A world named `name` with the bot `launcher` starts enrolled as [`BOT_NAME`], a human
    /// for each of `human_teams`, handoffs to any human going to `handoff_team`, and
    /// [`PEER_NAME`] enrolled too if `peer`; the relay's store in a file (so that it can be
    /// restarted) if `durable`. A first message with [`BYSTANDER_WORD`] is routed to
    /// [`BYSTANDER_NAME`].
    pub(crate) async fn build(
        name: &str,
        launcher: Arc<dyn Launcher>,
        answer_wait: Duration,
        human_teams: &[String],
        handoff_team: &str,
        peer: bool,
        durable: bool,
    ) -> Result<Self, String> {
        let mut routing = Routing::default().rule(&[BYSTANDER_WORD], BYSTANDER_TEAM);
        handoff_team.clone_into(&mut routing.handoff_team);
        let mut agents = vec![
            AgentSpec::bot(BOT_NAME, &routing.fallback_team),
            AgentSpec::human(BYSTANDER_NAME, BYSTANDER_TEAM),
        ];
        for (i, team) in human_teams.iter().enumerate() {
            agents.push(AgentSpec::human(&format!("{HUMAN_NAME}{i}"), team));
        }
        if peer {
            agents.push(AgentSpec::bot(PEER_NAME, "peers"));
        }
        let world = if durable {
            World::start_durable(name, &routing, &agents).await
        } else {
            World::start(name, &routing, &agents).await
        }
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
    pub(crate) fn bot_device(&self) -> Result<DeviceId, String> {
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
        Check::IgnoresForeignItems => ignores_foreign_items(suite, &scene).await,
        Check::StopsWithoutTheFloor => stops_without_the_floor(suite, &scene).await,
        Check::RecoversAfterRelayRestart => recovers_after_relay_restart(suite, &mut scene).await,
        Check::KeepsThreadOrder => keeps_thread_order(suite, &scene).await,
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
    linger_all(&mut [&mut first, &mut second, &mut third]).await;
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

/// How long the bot must have posted nothing in a thread before [`Check::StopsWithoutTheFloor`]
/// removes it from there (so that nothing it posts afterwards was under way before).
const QUIET: Duration = Duration::from_secs(1);

/// What the bot `device` posted to `thread` after `since` that `counts`, as
/// `content type (status)` texts.
fn posted_after(
    hostile: &HostileRelay,
    device: DeviceId,
    thread: ThreadId,
    since: Instant,
    counts: impl Fn(&PostedMessage) -> bool,
) -> Vec<String> {
    let since = since.into_std();
    hostile
        .posts()
        .iter()
        .filter(|p| {
            p.device == Some(device) && p.header.thread == thread && p.at > since && counts(p)
        })
        .map(|p| {
            let status = p
                .status
                .map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string());
            format!("{:?} (relay: {status})", p.header.content_type)
        })
        .collect()
}

/// Waits (at most `within`) until the bot `device` has posted nothing to `thread` for
/// [`QUIET`].
async fn quiet(hostile: &HostileRelay, device: DeviceId, thread: ThreadId, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let last = hostile
            .posts()
            .iter()
            .filter(|p| p.device == Some(device) && p.header.thread == thread)
            .map(|p| p.at)
            .max();
        let calm = last.is_none_or(|at| at.elapsed() >= QUIET);
        if calm || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stops_without_the_floor(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let bot = scene.bot_device()?;
    // The floor goes to the bystander in a group; the bot stays a member and hears the next
    // question, which it may not answer.
    if let Some(text) = follow_up(suite) {
        let mut customer = scene.customer(&suite.first.text).await?;
        first_answer(&mut customer).await?;
        let thread = customer.thread;
        let epochs = customer.epochs;
        scene
            .world
            .add_to_group(thread, BYSTANDER_NAME)
            .await
            .map_err(|e| format!("adding {BYSTANDER_NAME} to the thread: {e}"))?;
        let epoch = scene
            .world
            .give_floor(thread, BYSTANDER_NAME)
            .await
            .map_err(|e| format!("giving {BYSTANDER_NAME} the floor: {e}"))?;
        if !customer
            .until(suite.answer_wait, |c| c.epochs >= epochs + 2)
            .await
        {
            return Err(format!(
                "the customer never saw {BYSTANDER_NAME} join and take the floor (the check could not run)"
            ));
        }
        let asked = Instant::now();
        customer.say(text).await?;
        customer.linger(LINGER).await;
        let spoke = posted_after(&scene.hostile, bot, thread, asked, |p| {
            !p.header.content_type.allowed_without_floor()
        });
        if !spoke.is_empty() {
            return Err(format!(
                "after the floor of a group went to {BYSTANDER_NAME} (epoch {}), the customer asked {text:?} and {BOT_NAME} posted {} message(s) that only the floor holder may send: {}",
                epoch.0,
                spoke.len(),
                spoke.join(", ")
            ));
        }
    }
    // The bot is removed from a thread it answered in (unless it handed the thread on itself,
    // which removed it): after that, nothing from it there.
    let mut customer = scene.customer(&suite.first.text).await?;
    first_answer(&mut customer).await?;
    let thread = customer.thread;
    quiet(&scene.hostile, bot, thread, suite.answer_wait).await;
    let handed_off = |world: &World| {
        world.outcomes().iter().any(|o| {
            matches!(o, Outcome::HandedOff { thread: t, from, .. } if *t == thread && *from == bot)
        })
    };
    let removed = Instant::now();
    if !handed_off(&scene.world)
        && let Err(e) = scene.world.remove(thread, BOT_NAME).await
        && !handed_off(&scene.world)
    {
        return Err(format!("removing {BOT_NAME} from the thread: {e}"));
    }
    let earlier: Vec<_> = scene
        .hostile
        .posts()
        .iter()
        .filter(|p| p.at <= removed.into_std())
        .map(|p| p.header.message_id())
        .collect();
    customer.linger(LINGER).await;
    let spoke = posted_after(&scene.hostile, bot, thread, removed, |p| {
        !earlier.contains(&p.header.message_id())
    });
    if !spoke.is_empty() {
        return Err(format!(
            "{BOT_NAME} was removed from a thread and then posted {} more message(s) to it: {}",
            spoke.len(),
            spoke.join(", ")
        ));
    }
    // And it still works.
    let mut fresh = scene.customer(&suite.first.text).await?;
    first_answer(&mut fresh)
        .await
        .map_err(|why| format!("after losing the floor and being removed: {why}"))?;
    Ok(())
}

/// The question asked again in a thread after a fault: the first of the later ones, if the
/// suite has any (a bot that answers one question per thread is asked in new threads only).
fn follow_up(suite: &Suite) -> Option<&str> {
    suite.then.first().map(|ask| ask.text.as_str())
}

/// Asks the suite's follow-up question in each of `customers`' threads, if it has one, and
/// waits for each answer.
async fn follow_up_in(
    suite: &Suite,
    customers: &mut [&mut Talker],
    after: &str,
) -> Result<(), String> {
    if let Some(text) = follow_up(suite) {
        for customer in customers.iter_mut() {
            answer_next(customer, text)
                .await
                .map_err(|why| format!("after {after}: {why}"))?;
        }
    }
    Ok(())
}

/// Keeps every customer listening for [`LINGER`] (for duplicates and late answers).
async fn linger_all(customers: &mut [&mut Talker]) {
    let deadline = Instant::now() + LINGER;
    while Instant::now() < deadline {
        for customer in customers.iter_mut() {
            customer.pump(Duration::from_millis(200)).await;
        }
    }
}

/// `item` with one character of its longest text (a ciphertext or signature) changed.
fn tampered(item: &InboxItem) -> InboxItem {
    fn longest(value: &mut serde_json::Value) -> Option<&mut String> {
        match value {
            serde_json::Value::String(text) => Some(text),
            serde_json::Value::Array(values) => values
                .iter_mut()
                .filter_map(longest)
                .max_by_key(|t| t.len()),
            serde_json::Value::Object(fields) => fields
                .values_mut()
                .filter_map(longest)
                .max_by_key(|t| t.len()),
            _ => None,
        }
    }
    let mut item = item.clone();
    if let Some(text) = longest(&mut item.payload) {
        let middle = text.len() / 2;
        let changed: String = text
            .char_indices()
            .map(|(i, c)| match (i == middle, c) {
                (true, 'A') => 'B',
                (true, _) => 'A',
                (false, c) => c,
            })
            .collect();
        *text = changed;
    }
    item
}

/// `item`, a message, with a content type this protocol version does not know in its header.
fn unknown_content(item: &InboxItem) -> InboxItem {
    let mut item = item.clone();
    if let Some(header) = item
        .payload
        .get_mut("header")
        .and_then(serde_json::Value::as_object_mut)
    {
        header.insert(
            "content_type".to_owned(),
            serde_json::Value::String("hologram".to_owned()),
        );
    }
    item
}

/// A customer whose thread is routed to [`BYSTANDER_NAME`], and the join commit of that thread
/// (a wrap for the bystander, not for the bot), read from the bystander's inbox.
async fn bystander_commit(suite: &Suite, scene: &Scene) -> Result<(Talker, InboxItem), String> {
    let bystander = scene
        .customer(&format!("{BYSTANDER_WORD}: a question for a person"))
        .await?;
    let human = BYSTANDER_NAME;
    let routed = scene
        .world
        .outcome(
            suite.answer_wait,
            |o| matches!(o, Outcome::Routed { thread, .. } if *thread == bystander.thread),
        )
        .await
        .map_err(|e| {
            format!("the bystander's thread was not routed (the check could not run): {e}")
        })?;
    if let Outcome::Routed { agent, .. } = &routed
        && agent != human
    {
        return Err(format!(
            "the bystander's thread was routed to {agent}, not {human} (the check could not run)"
        ));
    }
    let device = scene
        .world
        .open_agent(human)
        .await
        .map_err(|e| format!("opening {human}'s device: {e}"))?;
    let deadline = Instant::now() + suite.answer_wait;
    while Instant::now() < deadline {
        let items = device
            .relay()
            .inbox(0, 100, Duration::from_secs(1), None)
            .await
            .map_err(|e| format!("reading {human}'s inbox: {e}"))?;
        if let Some(commit) = items
            .into_iter()
            .find(|i| i.kind == ItemKind::Commit && i.thread == bystander.thread)
        {
            return Ok((bystander, commit));
        }
    }
    Err(format!(
        "the thread routed to {human} was not assigned within {:?} (the check could not run)",
        suite.answer_wait
    ))
}

async fn ignores_foreign_items(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let bot = scene.bot_device()?;
    let mut first = scene.customer(&suite.first.text).await?;
    let answer = first_answer_id(&mut first).await?;
    let mut second = scene.customer(&suite.first.text).await?;
    first_answer(&mut second).await?;
    // A message of the customer to copy: a typing indicator (nothing to answer). A bot that
    // hands every thread on after its answer is no longer sent it: then only the history
    // grant is copied.
    first.send(&Content::Typing { active: true }).await?;
    let thread = first.thread;
    let of_first = |kind: ItemKind| {
        scene
            .hostile
            .delivered(bot)
            .into_iter()
            .rev()
            .find(|i| i.kind == kind && i.thread == thread)
    };
    let deadline = Instant::now() + LINGER;
    let message = loop {
        let message = of_first(ItemKind::Message);
        if message.is_some() || Instant::now() >= deadline {
            break message;
        }
        first.pump(Duration::from_millis(200)).await;
    };
    let grant = of_first(ItemKind::History).ok_or(
        "the history grant of the customer's thread did not reach the bot through the proxy (the check could not run)",
    )?;
    let mut foreign = vec![tampered(&grant)];
    let copied = message.as_ref().unwrap_or(&grant);
    if let Some(message) = &message {
        foreign.push(tampered(message));
        foreign.push(unknown_content(message));
    }
    foreign.push(InboxItem {
        thread: second.thread,
        ..copied.clone()
    });
    foreign.push(InboxItem {
        thread: ThreadId::from_bytes([0x5a; 16]),
        ..copied.clone()
    });
    let (mut bystander, commit) = bystander_commit(suite, scene).await?;
    foreign.push(commit);
    let count = foreign.len();
    for item in foreign {
        scene.hostile.inject(bot, item, Slip::Before);
    }
    // More content with nothing to answer.
    first
        .send(&Content::Receipt {
            kind: ReceiptKind::Read,
            messages: vec![answer],
        })
        .await?;
    first.send(&Content::Typing { active: false }).await?;
    // A new thread: its items carry the foreign ones to the bot, and it must be answered.
    let after = format!("{count} foreign items");
    let mut third = scene.customer(&suite.first.text).await?;
    first_answer(&mut third)
        .await
        .map_err(|why| format!("a new thread after {after}: {why}"))?;
    if scene.hostile.pending_injections(bot) > 0 {
        return Err(
            "the foreign items did not reach the bot with the new thread's (the check could not run)"
                .to_owned(),
        );
    }
    first.linger(LINGER).await;
    if first.count_of(BOT_NAME) > 1 {
        return Err(format!(
            "the bot answered a typing indicator, a read receipt or one of {count} foreign items: {:?}",
            first.texts_of(BOT_NAME)
        ));
    }
    follow_up_in(suite, &mut [&mut first, &mut second], &after).await?;
    linger_all(&mut [&mut first, &mut second, &mut third, &mut bystander]).await;
    let asked = 1 + usize::from(follow_up(suite).is_some());
    exactly(&[
        (
            "the customer whose messages were tampered with",
            &first,
            asked,
        ),
        ("the customer of the relabelled message", &second, asked),
        ("the customer of a new thread after them", &third, 1),
    ])?;
    if bystander.count_of(BOT_NAME) > 0 {
        return Err(format!(
            "the bot spoke in a thread it was not added to: {:?}",
            bystander.texts_of(BOT_NAME)
        ));
    }
    Ok(())
}

/// The first answer in a customer's thread (as [`first_answer`]), and its message id.
async fn first_answer_id(customer: &mut Talker) -> Result<switchboard_protocol::MessageId, String> {
    first_answer(customer).await?;
    customer
        .said
        .iter()
        .find(|s| s.name == BOT_NAME)
        .map(|s| s.id)
        .ok_or_else(|| "the first answer was not kept".to_owned())
}

/// How long the relay is down in [`Check::RecoversAfterRelayRestart`].
const RELAY_DOWN: Duration = Duration::from_secs(2);

async fn recovers_after_relay_restart(suite: &Suite, scene: &mut Scene) -> Result<(), String> {
    let mut before = scene.customer(&suite.first.text).await?;
    first_answer(&mut before).await?;
    scene
        .world
        .restart_relay(RELAY_DOWN)
        .await
        .map_err(|e| format!("restarting the relay: {e}"))?;
    follow_up_in(suite, &mut [&mut before], "the relay's restart").await?;
    let mut after = scene.customer(&suite.first.text).await?;
    first_answer(&mut after)
        .await
        .map_err(|why| format!("a new thread after the relay's restart: {why}"))?;
    linger_all(&mut [&mut before, &mut after]).await;
    exactly(&[
        (
            "the customer of the thread from before the restart",
            &before,
            1 + usize::from(follow_up(suite).is_some()),
        ),
        ("the customer of a new thread after the restart", &after, 1),
    ])
}

/// How many threads [`Check::KeepsThreadOrder`] runs at once.
const ORDERED_THREADS: usize = 3;

async fn keeps_thread_order(suite: &Suite, scene: &Scene) -> Result<(), String> {
    let mut customers = Vec::new();
    for _ in 0..ORDERED_THREADS {
        customers.push(scene.customer(&suite.first.text).await?);
    }
    for customer in &mut customers {
        first_answer(customer).await?;
    }
    // Every customer's later questions back to back, the threads interleaved.
    for ask in &suite.then {
        for customer in &mut customers {
            customer.say(&ask.text).await?;
        }
    }
    let want = 1 + suite.then.len();
    let deadline = Instant::now() + suite.answer_wait;
    while Instant::now() < deadline && customers.iter().any(|c| c.count_of(BOT_NAME) < want) {
        for customer in &mut customers {
            customer.pump(Duration::from_millis(100)).await;
        }
    }
    let mut all: Vec<&mut Talker> = customers.iter_mut().collect();
    linger_all(&mut all).await;
    for (n, customer) in customers.iter().enumerate() {
        let texts = customer.texts_of(BOT_NAME);
        let answers = texts.get(1..).unwrap_or_default();
        if answers.len() < suite.then.len() {
            return Err(not_answered(
                customer,
                &format!(
                    "all {} questions of thread {} of {ORDERED_THREADS} (it answered {})",
                    suite.then.len(),
                    n + 1,
                    answers.len()
                ),
                suite.answer_wait,
            ));
        }
        for (i, (ask, answer)) in suite.then.iter().zip(answers).enumerate() {
            if !ask.expect.matches(answer) {
                return Err(format!(
                    "in thread {} of {ORDERED_THREADS}, answer {} was {answer:?}: expected {} (the answer to {:?}); the answers in order: {answers:?}",
                    n + 1,
                    i + 1,
                    ask.expect,
                    ask.text
                ));
            }
        }
    }
    let named: Vec<(String, &Talker)> = customers
        .iter()
        .enumerate()
        .map(|(n, c)| (format!("the customer of thread {}", n + 1), c))
        .collect();
    let counted: Vec<(&str, &Talker, usize)> = named
        .iter()
        .map(|(who, c)| (who.as_str(), *c, want))
        .collect();
    exactly(&counted)
}
