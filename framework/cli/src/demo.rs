//! `switchboard demo`: the whole system in one process, on its embedded default (a SQLite
//! relay on a loopback port), with every step printed: a customer writes to Acme; Acme's admin
//! routes the thread to OrderBot by a keyword rule; OrderBot, the order-status bot of
//! bots/order-status run by the SDK's `Runtime`, asks Acme's order API (a local fake on a
//! loopback port) and answers, and the customer sees who spoke; asked for something else, the
//! bot hands off to billing; the admin transfers the thread to Dana in a new epoch; OrderBot is
//! out and cannot read on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use switchboard::prelude::*;
use switchboard_admin::{Admin, Config, Outcome};
use switchboard_bot_order_status::{OrderApi, OrderBot, fake_api};
use switchboard_client::{Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::Epoch;
use tokio::sync::mpsc;

use crate::out;

/// `switchboard demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where to keep the demo's database, keystores and audit log (default: a new directory
    /// under the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// How many receive rounds of 1 s a step may take before the demo gives up.
const PATIENCE: usize = 30;

pub(crate) async fn run(args: DemoArgs) -> Result<(), String> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .next()
        .is_some()
    {
        return Err(format!(
            "{} is not empty: the demo starts from nothing (give another --dir)",
            dir.display()
        ));
    }
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    let relay = switchboard_relay::server::start(&db, "127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = relay.url();
    out(&format!(
        "relay on {url}, database {}",
        dir.join("relay.db").display()
    ));

    KeystoreSecret::create_key_file(&dir.join("admin.key")).map_err(|e| e.to_string())?;
    let config = Config::parse(
        &format!(
            r#"
            entity = "acme"
            display_name = "Acme"
            relay = "{url}"
            keystore = "admin.keystore"
            key_file = "admin.key"
            store = "sqlite://admin.db"    # the admin's threads, a row each
            audit_log = "audit.jsonl"

            [routing]
            fallback_team = "billing"

            [[rules]]
            keywords = ["order", "delivery"]
            team = "orders"

            [history]
            on_route = true                # the bot reads the question that routed the thread
            "#
        ),
        &dir,
    )?;
    let mut admin = crate::admin_cmd::init_admin(config).await?;
    out(&format!(
        "Acme's admin device {} (fingerprint {}; its threads in admin.db, a row each)",
        admin.device().id(),
        admin.device().fingerprint()
    ));
    let secret = KeystoreSecret::passphrase("demo passphrase");
    // Enrolment is bound to fingerprints both ways (here read directly; on separate machines,
    // compared out of band): each agent checks the admin key, the admin each agent's key.
    let admin_fingerprint = ExpectedKey::Fingerprint(admin.device().fingerprint());
    let bot = agent(&dir, &url, &secret, "orderbot", &admin_fingerprint).await?;
    let mut dana = agent(&dir, &url, &secret, "dana", &admin_fingerprint).await?;
    for (name, kind, device, fingerprint, team) in [
        (
            "OrderBot",
            AgentKind::Bot,
            bot.id(),
            bot.fingerprint(),
            "orders",
        ),
        (
            "Dana",
            AgentKind::Human,
            dana.id(),
            dana.fingerprint(),
            "billing",
        ),
    ] {
        let record = admin
            .add_agent(
                name,
                kind,
                device,
                vec![team.to_owned()],
                &ExpectedKey::Fingerprint(fingerprint),
            )
            .await
            .map_err(|e| e.to_string())?;
        out(&format!(
            "Acme vouches for {name} ({kind:?}, team {team}) with a credential until {}",
            record.credential.expires_at.0
        ));
    }
    // OrderBot: the order-status bot of bots/, run by the SDK's runtime, asking the order API.
    drop(bot);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let api_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let api_server = fake_api::serve(listener, fake_api::demo_orders());
    out(&format!(
        "Acme's order API on {api_url} (orders 42, A-1234, 7, 13)"
    ));
    let api = OrderApi::new(&api_url, reqwest::Client::new()).map_err(|e| e.to_string())?;
    let (tx, mut told) = mpsc::unbounded_channel();
    let narrated = Narrated {
        bot: OrderBot::new(api).handoff_team("billing"),
        told: tx,
        removed: AtomicBool::new(false),
        after_removal: Arc::new(AtomicUsize::new(0)),
    };
    let after_removal = Arc::clone(&narrated.after_removal);
    let runtime = Runtime::builder()
        .keystore(dir.join("orderbot.keystore"))
        .secret(secret.clone())
        .store(format!(
            "sqlite://{}",
            dir.join("orderbot.botstore.db").display()
        ))
        .instance("demo")
        .bot(narrated)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let bot = runtime.handle();
    let bot_task = tokio::spawn(runtime.run_until(std::future::pending()));
    out("OrderBot runs in the SDK's runtime (its state in orderbot.botstore.db)");
    let mut customer = Device::create(
        &dir.join("customer.keystore"),
        &secret,
        NewDevice::new(&url, NewRole::Customer),
    )
    .await
    .map_err(|e| e.to_string())?;

    out("\n1. The customer writes to Acme (a new thread, epoch 0, wrapped to Acme's admin).");
    let acme = EntityId::new("acme").map_err(|e| e.to_string())?;
    let thread = customer
        .open_thread(&acme)
        .await
        .map_err(|e| e.to_string())?;
    let pinned = customer
        .pinned_admin(&acme)
        .map(|p| p.fingerprint().to_string())
        .unwrap_or_default();
    out(&format!("   customer pinned Acme's admin key {pinned}"));
    say(&mut customer, thread, "Hi, where is my order 42?").await?;

    out("\n2. The admin routes it by rule, with the epoch secret wrapped to the bot.");
    let routed = admin_until(&mut admin, |o| matches!(o, Outcome::Routed { .. })).await?;
    if let Outcome::Routed { agent, reason, .. } = &routed {
        out(&format!("   routed to {agent}: {reason}"));
    }
    let Told::Joined(epoch) = told_next(&mut told).await? else {
        return Err("OrderBot was told something else first".to_owned());
    };
    out(&format!("   OrderBot joined in epoch {}", epoch.0));
    out("   OrderBot reads the routing question in the forwarded history and asks the order API");
    show(&mut customer, "customer").await?;

    out("\n3. The customer wants a refund; no order number: the bot asks for a human.");
    say(&mut customer, thread, "I would rather get a refund.").await?;
    show(&mut customer, "customer").await?;
    out("   OrderBot -> admin: hand off to the billing team");

    out(
        "\n4. The admin transfers the thread to Dana: a new epoch, wrapped to Dana and the customer.",
    );
    let handed = admin_until(&mut admin, |o| matches!(o, Outcome::HandedOff { .. })).await?;
    if let Outcome::HandedOff { to, reason, .. } = &handed {
        out(&format!("   handed off to {to}: {reason}"));
    }
    if !matches!(told_next(&mut told).await?, Told::FloorLost) {
        return Err("OrderBot did not lose the floor first".to_owned());
    }
    if !matches!(told_next(&mut told).await?, Told::Removed) {
        return Err("OrderBot was not removed".to_owned());
    }
    out("   OrderBot lost the floor and was removed; its state of the thread is deleted");
    let joined = until(&mut dana, |e| matches!(e, Event::Joined { .. })).await?;
    if let Event::Joined { epoch, .. } = joined {
        out(&format!("   Dana joined in epoch {}", epoch.0));
    }
    say(
        &mut dana,
        thread,
        "Dana from billing: your refund is on its way.",
    )
    .await?;
    show(&mut customer, "customer").await?;

    out("\n5. OrderBot cannot read on.");
    say(&mut customer, thread, "Thanks Dana!").await?;
    show(&mut dana, "Dana").await?;
    // Stopping the runtime finishes whatever it fetched: anything for OrderBot would have
    // reached it by then.
    bot.shutdown();
    tokio::time::timeout(Duration::from_secs(30), bot_task)
        .await
        .map_err(|_| "OrderBot's runtime did not stop in time".to_owned())?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    out(&format!(
        "   OrderBot was told of {} event(s) of the thread after its removal",
        after_removal.load(Ordering::SeqCst)
    ));
    api_server.abort();
    for device in [&mut customer, &mut dana] {
        device.flush_acks().await;
    }
    admin.flush_acks().await;
    out(&format!(
        "\nDone. Audit log: {}",
        dir.join("audit.jsonl").display()
    ));
    relay.stop().await.map_err(|e| e.to_string())
}

async fn agent(
    dir: &std::path::Path,
    url: &str,
    secret: &KeystoreSecret,
    name: &str,
    admin: &ExpectedKey,
) -> Result<Device, String> {
    Device::create(
        &dir.join(format!("{name}.keystore")),
        secret,
        NewDevice::new(
            url,
            NewRole::Agent {
                entity: EntityId::new("acme").map_err(|e| e.to_string())?,
                admin: admin.clone(),
            },
        ),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn say(device: &mut Device, thread: ThreadId, text: &str) -> Result<(), String> {
    let sealed = device
        .send(thread, &Content::text(text), None)
        .await
        .map_err(|e| e.to_string())?;
    out(&format!(
        "   sent {:?} (epoch {}, {} bytes of ciphertext)",
        text,
        sealed.header.epoch.0,
        sealed.ciphertext.len()
    ));
    Ok(())
}

/// Receives until a text message arrives and prints it as `who` sees it.
async fn show(device: &mut Device, who: &str) -> Result<(), String> {
    let spoken = |e: &Event| {
        matches!(
            e,
            Event::Message { message, .. }
                if matches!(message.content, Content::Text { .. } | Content::Reply { .. })
        )
    };
    let event = until(device, spoken).await?;
    if let Event::Message { message, .. } = event {
        let speaker = match &message.sender_info {
            Sender::Customer => "the customer".to_owned(),
            Sender::Admin => "Acme (admin)".to_owned(),
            Sender::Agent { display_name, kind } => {
                format!("{display_name} ({kind:?}, verified by Acme's credential)")
            }
        };
        let text = message.content.as_text().unwrap_or("(no text)");
        out(&format!("   [{who} sees] {speaker}: {text}"));
    }
    Ok(())
}

async fn until(device: &mut Device, want: impl Fn(&Event) -> bool) -> Result<Event, String> {
    for _ in 0..PATIENCE {
        for event in device
            .receive(Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?
        {
            if want(&event) {
                return Ok(event);
            }
        }
    }
    Err(format!("device {} waited in vain", device.id()))
}

async fn admin_until(
    admin: &mut Admin,
    want: impl Fn(&Outcome) -> bool,
) -> Result<Outcome, String> {
    for _ in 0..PATIENCE {
        for outcome in admin
            .step(Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?
        {
            if want(&outcome) {
                return Ok(outcome);
            }
        }
    }
    Err("the admin waited in vain".to_owned())
}

/// What the demo's OrderBot tells the demo, in order.
#[derive(Debug)]
enum Told {
    Joined(Epoch),
    FloorLost,
    Removed,
}

/// The order-status bot of bots/, telling the demo what happened to it.
struct Narrated {
    bot: OrderBot,
    told: mpsc::UnboundedSender<Told>,
    removed: AtomicBool,
    after_removal: Arc<AtomicUsize>,
}

impl Narrated {
    fn count_if_removed(&self) {
        if self.removed.load(Ordering::SeqCst) {
            self.after_removal.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Bot for Narrated {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        self.count_if_removed();
        self.bot.on_thread(cx, thread, history).await?;
        let _ = self.told.send(Told::Joined(thread.epoch));
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        self.count_if_removed();
        self.bot.on_message(cx, msg).await
    }

    async fn on_floor_lost(&self, cx: &mut Ctx) -> Result<(), BotError> {
        self.count_if_removed();
        self.bot.on_floor_lost(cx).await?;
        let _ = self.told.send(Told::FloorLost);
        Ok(())
    }

    async fn on_removed(&self, thread: ThreadId) -> Result<(), BotError> {
        self.bot.on_removed(thread).await?;
        self.removed.store(true, Ordering::SeqCst);
        let _ = self.told.send(Told::Removed);
        Ok(())
    }
}

/// The next thing OrderBot tells the demo (bounded).
async fn told_next(told: &mut mpsc::UnboundedReceiver<Told>) -> Result<Told, String> {
    tokio::time::timeout(Duration::from_secs(30), told.recv())
        .await
        .map_err(|_| "OrderBot told nothing in time".to_owned())?
        .ok_or_else(|| "OrderBot's runtime stopped".to_owned())
}
