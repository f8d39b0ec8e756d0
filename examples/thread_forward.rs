//! Run: `cargo run -p switchboard-examples --example thread_forward`
//!
//! The whole Switchboard flow in one process, every value crossing between devices as the JSON
//! the relay would carry: a customer opens a thread with Acme; Acme's admin device forwards it to
//! OrderBot with the thread key HPKE-wrapped to the bot; the bot answers and the customer sees
//! who spoke; the bot asks for a human; the admin transfers the thread to Dana in a new epoch and
//! the bot can no longer read it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_protocol::{
    AgentCredential, AgentKind, CipherSuite, CommitAction, Content, CredentialRequest, Csprng,
    DeviceId, DeviceKeys, EntityId, Error, HandoffTarget, Member, ReceivedMessage, SeenWraps,
    Sender, ThreadState, Timestamp, WireType, decode, encode,
};

/// Sends a value "over the wire": encode to JSON and decode on the other side.
fn wire<T: WireType>(value: &T) -> Result<(T, usize), Error> {
    let bytes = encode(value)?;
    Ok((decode(&bytes)?, bytes.len()))
}

fn show(who: &str, message: &ReceivedMessage) {
    let speaker = match &message.sender_info {
        Sender::Customer => "customer".to_owned(),
        Sender::Admin => "Acme (admin)".to_owned(),
        Sender::Agent { display_name, kind } => format!("{display_name}, for Acme ({kind:?})"),
    };
    let text = message.content.as_text().unwrap_or("(no text)");
    println!(
        "  [{who} sees] {speaker}: {text}  (epoch {})",
        message.epoch
    );
}

fn run() -> Result<(), Error> {
    let now = Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut rng = Csprng::from_os()?;
    let acme = EntityId::new("acme")?;
    let mut device = |suite| DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
    let customer = device(CipherSuite::default());
    let admin = device(CipherSuite::default());
    let bot = device(CipherSuite::XWingSha256ChaCha20Poly1305);
    let human = device(CipherSuite::default());

    let agent = |keys: &DeviceKeys, name: &str, kind| -> Result<Member, Error> {
        let bundle = keys.bundle(now);
        let request = CredentialRequest {
            entity: &acme,
            agent: &bundle,
            display_name: name,
            kind,
            issued_at: now,
            expires_at: now.plus(30 * 86_400),
        };
        let credential = AgentCredential::issue(&admin, &request)?;
        Ok(Member::agent(bundle, credential))
    };

    println!(
        "Acme's admin key fingerprint: {}",
        admin.bundle(now).fingerprint()
    );
    println!("(the customer app shows this on first contact; compare it out of band)\n");

    println!("1. The customer opens a thread (epoch 0) and writes.");
    let (mut customer_view, open) =
        ThreadState::open(&customer, acme.clone(), &admin.bundle(now), now, &mut rng)?;
    let (open, size) = wire(&open)?;
    println!("  thread {} opened; {size} bytes to the relay", open.thread);
    let (hello, _) =
        wire(&customer_view.seal(&customer, &Content::text("Hi, where is my order 42?"), None)?)?;

    println!("2. The admin accepts, reads, and forwards the thread to OrderBot (epoch 1).");
    // The admin device remembers every thread-open wrap it accepted, so replays are refused.
    let mut admin_seen = SeenWraps::new();
    let mut admin_view = ThreadState::accept(&admin, &acme, &open, now, &mut admin_seen)?;
    show("admin", &admin_view.open_message(&hello, now)?);
    let order_bot = agent(&bot, "OrderBot", AgentKind::Bot)?;
    let (assign, size) = wire(&admin_view.commit(
        &admin,
        CommitAction::Assign {
            agent: Box::new(order_bot),
        },
        now,
        &mut rng,
    )?)?;
    println!(
        "  forward command: {} wraps, {size} bytes (the bot's wrap uses X-Wing)",
        assign.wraps.len()
    );
    customer_view.apply_commit(&customer, &assign, now)?;
    let mut bot_view = ThreadState::join(
        &bot,
        &acme,
        admin.device(),
        admin.identity_public(),
        &assign,
        now,
        &mut switchboard_protocol::DeviceMemory::new(),
    )?;

    println!("3. The bot replies; the customer verifies who spoke.");
    let (reply, _) = wire(&bot_view.seal(
        &bot,
        &Content::Reply {
            text: "Order 42 ships today.".into(),
        },
        Some(hello.header.message_id()),
    )?)?;
    show("customer", &customer_view.open_message(&reply, now)?);
    let (refund, _) = wire(&customer_view.seal(
        &customer,
        &Content::text("Can I get a refund instead?"),
        None,
    )?)?;
    show("bot", &bot_view.open_message(&refund, now)?);

    println!("4. The bot cannot do refunds and asks for a human.");
    let (handoff, _) = wire(&bot_view.seal(
        &bot,
        &Content::HandoffRequest {
            target: HandoffTarget::Team("billing".into()),
            note: "refund request for order 42".into(),
        },
        None,
    )?)?;
    show("admin", &admin_view.open_message(&handoff, now)?);

    println!(
        "5. The admin transfers the thread to Dana: epoch 2, wrapped to the customer and Dana only."
    );
    let dana = agent(&human, "Dana", AgentKind::Human)?;
    let (transfer, _) = wire(&admin_view.commit(
        &admin,
        CommitAction::Transfer {
            from: bot.device(),
            to: Box::new(dana),
        },
        now,
        &mut rng,
    )?)?;
    customer_view.apply_commit(&customer, &transfer, now)?;
    let mut human_view = ThreadState::join(
        &human,
        &acme,
        admin.device(),
        admin.identity_public(),
        &transfer,
        now,
        &mut switchboard_protocol::DeviceMemory::new(),
    )?;
    match bot_view.apply_commit(&bot, &transfer, now) {
        Err(e) => println!("  bot: {e}"),
        Ok(()) => return Err(Error::Internal("the removed bot applied the transfer")),
    }
    let (dana_says, _) = wire(&human_view.seal(
        &human,
        &Content::text("Hi, Dana here. Refund issued."),
        None,
    )?)?;
    show("customer", &customer_view.open_message(&dana_says, now)?);
    match bot_view.open_message(&dana_says, now) {
        Err(e) => println!("  [bot] cannot read epoch 2: {e}"),
        Ok(_) => return Err(Error::Internal("the removed bot read epoch 2")),
    }
    println!("\nDone: the relay would have carried only ciphertext, wraps and signatures.");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
