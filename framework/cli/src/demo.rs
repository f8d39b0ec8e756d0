//! `switchboard demo`: the whole system in one process, on its embedded default (a SQLite
//! relay on a loopback port), with every step printed: a customer writes to Acme; Acme's admin
//! routes the thread to OrderBot by a keyword rule; the bot answers and the customer sees who
//! spoke; the bot hands off to billing; the admin transfers the thread to Dana in a new epoch;
//! OrderBot is out and cannot read on.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchboard_admin::{Admin, Config, Outcome};
use switchboard_client::{Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{AgentKind, Content, EntityId, HandoffTarget, Sender};

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
            audit_log = "audit.jsonl"

            [routing]
            fallback_team = "billing"

            [[rules]]
            keywords = ["order", "delivery"]
            team = "orders"
            "#
        ),
        &dir,
    )?;
    let mut admin = Admin::init(config).await.map_err(|e| e.to_string())?;
    out(&format!(
        "Acme's admin device {} (fingerprint {})",
        admin.device().id(),
        admin.device().fingerprint()
    ));
    let secret = KeystoreSecret::passphrase("demo passphrase");
    // Enrolment is bound to fingerprints both ways (here read directly; on separate machines,
    // compared out of band): each agent checks the admin key, the admin each agent's key.
    let admin_fingerprint = ExpectedKey::Fingerprint(admin.device().fingerprint());
    let mut bot = agent(&dir, &url, &secret, "orderbot", &admin_fingerprint).await?;
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
    let joined = until(&mut bot, |e| matches!(e, Event::Joined { .. })).await?;
    if let Event::Joined { epoch, .. } = joined {
        out(&format!("   OrderBot joined in epoch {}", epoch.0));
    }
    say(
        &mut bot,
        thread,
        "Hello, OrderBot here. Order 42 ships today.",
    )
    .await?;
    show(&mut customer, "customer").await?;

    out("\n3. The customer wants a refund; the bot asks for a human.");
    say(&mut customer, thread, "I would rather get a refund.").await?;
    show(&mut bot, "OrderBot").await?;
    bot.send(
        thread,
        &Content::HandoffRequest {
            target: HandoffTarget::Team("billing".into()),
            note: "refund for order 42".into(),
        },
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    out("   OrderBot -> admin: hand off to the billing team");

    out(
        "\n4. The admin transfers the thread to Dana: a new epoch, wrapped to Dana and the customer.",
    );
    let handed = admin_until(&mut admin, |o| matches!(o, Outcome::HandedOff { .. })).await?;
    if let Outcome::HandedOff { to, reason, .. } = &handed {
        out(&format!("   handed off to {to}: {reason}"));
    }
    until(&mut bot, |e| matches!(e, Event::Removed { .. })).await?;
    out("   OrderBot was removed; its state of the thread is deleted");
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
    let bot_sees = bot
        .receive(Duration::from_millis(500))
        .await
        .map_err(|e| e.to_string())?;
    out(&format!(
        "   OrderBot received {} item(s) and holds {} thread(s)",
        bot_sees.len(),
        bot.threads().count()
    ));
    show(&mut dana, "Dana").await?;
    for device in [&mut customer, &mut bot, &mut dana] {
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

async fn say(
    device: &mut Device,
    thread: switchboard_protocol::ThreadId,
    text: &str,
) -> Result<(), String> {
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
