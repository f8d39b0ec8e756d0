//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer, via `cargo fuzz`) and by
//! the protocol's `fuzz_smoke` test, which runs them on seeded mutations of the test vectors in
//! every CI run. Each takes arbitrary bytes and must return without panicking, whatever they are.

#![allow(missing_docs, unreachable_pub, clippy::missing_panics_doc)]

use std::cell::RefCell;

use switchboard_protocol::{
    AgentCredential, AgentKind, CipherSuite, Commit, CommitAction, CredentialRequest, Csprng,
    DeviceId, DeviceKeys, EntityId, Epoch, ExpectedWrap, HistoryGrant, KeyBundle, KeyWrap, Member,
    SealedMessage, SeenWraps, ThreadOpen, ThreadSnapshot, ThreadState, Timestamp, decode,
};

pub const NOW: Timestamp = Timestamp(1_800_000_000);

/// A fixed thread: customer, admin and one bot, assigned, all from fixed seeds.
pub struct Fixture {
    pub entity: EntityId,
    pub customer: DeviceKeys,
    pub admin: DeviceKeys,
    pub bot: DeviceKeys,
    pub customer_view: ThreadState,
    pub admin_view: ThreadState,
    pub bot_view: ThreadState,
    /// Valid values to mutate, as JSON.
    pub seeds: Vec<Vec<u8>>,
}

/// Builds the fixture. `None` only if the protocol itself fails, which the tests report.
pub fn fixture() -> Option<Fixture> {
    let keys = |n: u8| {
        DeviceKeys::from_seed(
            DeviceId::from_bytes([n; 16]),
            CipherSuite::default(),
            &[n; 32],
        )
    };
    let (customer, admin, bot) = (keys(1), keys(2), keys(3));
    let entity = EntityId::new("acme").ok()?;
    let mut rng = Csprng::from_seed([9; 32]);
    let (mut customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, &mut rng).ok()?;
    let mut admin_view =
        ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).ok()?;
    let first = customer_view
        .seal(
            &customer,
            &switchboard_protocol::Content::text("first"),
            None,
        )
        .ok()?;
    admin_view.open_message(&first, NOW).ok()?;
    let bundle = bot.bundle(NOW);
    let credential = AgentCredential::issue(
        &admin,
        &CredentialRequest {
            entity: &entity,
            agent: &bundle,
            display_name: "Bot",
            kind: AgentKind::Bot,
            issued_at: NOW,
            expires_at: NOW.plus(3600),
        },
    )
    .ok()?;
    let assign = admin_view
        .commit(
            &admin,
            CommitAction::Assign {
                agent: Box::new(Member::agent(bundle.clone(), credential.clone())),
            },
            NOW,
            &mut rng,
        )
        .ok()?;
    customer_view.apply_commit(&customer, &assign, NOW).ok()?;
    let mut bot_view = ThreadState::join(
        &bot,
        &entity,
        admin.device(),
        admin.identity_public(),
        &assign,
        NOW,
        &mut switchboard_protocol::DeviceMemory::new(),
    )
    .ok()?;
    let reply = bot_view
        .seal(&bot, &switchboard_protocol::Content::text("hello"), None)
        .ok()?;
    let grant = admin_view
        .grant_history(&admin, &bundle, vec![first], NOW, &mut rng)
        .ok()?;
    // A valid commit for epoch 2, made by a second admin view of the same thread.
    let rekey = {
        let mut scratch =
            ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).ok()?;
        let agent = Member::agent(bundle.clone(), credential);
        scratch
            .commit(
                &admin,
                CommitAction::Assign {
                    agent: Box::new(agent),
                },
                NOW,
                &mut rng,
            )
            .ok()?;
        scratch
            .commit(&admin, CommitAction::Rekey, NOW, &mut rng)
            .ok()?
    };
    let enc = |v: &dyn erased::Encode| v.json();
    let seeds = vec![
        enc(&open),
        enc(&assign),
        enc(&rekey),
        enc(&reply),
        enc(&bundle),
        enc(&open.wrap),
        enc(&bot_view.snapshot()),
        enc(&grant),
    ];
    Some(Fixture {
        entity,
        customer,
        admin,
        bot,
        customer_view,
        admin_view,
        bot_view,
        seeds,
    })
}

mod erased {
    use switchboard_protocol::{WireType, encode};

    pub trait Encode {
        fn json(&self) -> Vec<u8>;
    }

    impl<T: WireType> Encode for T {
        fn json(&self) -> Vec<u8> {
            encode(self).unwrap_or_default()
        }
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = RefCell::new(fixture());
}

fn with_fixture(f: impl FnOnce(&mut Fixture)) {
    FIXTURE.with(|cell| {
        if let Some(fixture) = cell.borrow_mut().as_mut() {
            f(fixture);
        }
    });
}

/// Every wire decoder.
pub fn decode_wire(data: &[u8]) {
    let _ = decode::<KeyBundle>(data);
    let _ = decode::<AgentCredential>(data);
    let _ = decode::<KeyWrap>(data);
    let _ = decode::<Commit>(data);
    let _ = decode::<SealedMessage>(data);
    let _ = decode::<ThreadOpen>(data);
    let _ = decode::<ThreadSnapshot>(data);
    let _ = decode::<HistoryGrant>(data);
}

/// Decode a message and open it as the customer, the admin and the bot.
pub fn open_message(data: &[u8]) {
    if let Ok(message) = decode::<SealedMessage>(data) {
        with_fixture(|f| {
            let _ = f.customer_view.open_message(&message, NOW);
            let _ = f.admin_view.open_message(&message, NOW);
            let _ = f.bot_view.open_message(&message, NOW);
        });
    }
}

/// Decode a commit and apply it as the customer, the bot, and join with it as the bot.
pub fn apply_commit(data: &[u8]) {
    if let Ok(commit) = decode::<Commit>(data) {
        with_fixture(|f| {
            let _ = f.customer_view.apply_commit(&f.customer, &commit, NOW);
            let _ = f.bot_view.apply_commit(&f.bot, &commit, NOW);
            let _ = ThreadState::join(
                &f.bot,
                &f.entity,
                f.admin.device(),
                f.admin.identity_public(),
                &commit,
                NOW,
                &mut switchboard_protocol::DeviceMemory::new(),
            );
        });
    }
}

/// Decode a wrap and open it as the admin, expecting the customer's epoch-0 wrap.
pub fn open_wrap(data: &[u8]) {
    if let Ok(wrap) = decode::<KeyWrap>(data) {
        with_fixture(|f| {
            let expected = ExpectedWrap {
                sender: f.customer.device(),
                sender_key: &f.customer.identity_public(),
                thread: wrap.thread,
                epoch: Epoch(0),
                roster_hash: wrap.roster_hash,
            };
            let _ = wrap.open(&f.admin, &expected, NOW, &mut SeenWraps::new());
        });
    }
}

/// Decode a thread open and accept it as the admin.
pub fn accept_thread_open(data: &[u8]) {
    if let Ok(open) = decode::<ThreadOpen>(data) {
        with_fixture(|f| {
            let _ = ThreadState::accept(&f.admin, &f.entity, &open, NOW, &mut SeenWraps::new());
        });
    }
}

/// Decode a thread snapshot, restore it as the bot and the customer, and use what was restored:
/// seal a message and open the customer's next one.
pub fn restore_snapshot(data: &[u8]) {
    if let Ok(snapshot) = decode::<ThreadSnapshot>(data) {
        with_fixture(|f| {
            let _ = ThreadState::restore(&f.customer, snapshot.clone());
            if let Ok(mut restored) = ThreadState::restore(&f.bot, snapshot) {
                let _ = restored.seal(&f.bot, &switchboard_protocol::Content::text("x"), None);
                if let Ok(next) = f.customer_view.seal(
                    &f.customer,
                    &switchboard_protocol::Content::text("y"),
                    None,
                ) {
                    let _ = restored.open_message(&next, NOW);
                }
            }
        });
    }
}

/// Decode a history grant and accept it as the bot (on a copy of its state, so that a valid
/// grant is accepted every time, not refused as a replay after the first).
pub fn accept_history(data: &[u8]) {
    if let Ok(grant) = decode::<HistoryGrant>(data) {
        with_fixture(|f| {
            if let Ok(mut bot) = ThreadState::restore(&f.bot, f.bot_view.snapshot()) {
                let _ = bot.accept_history(&f.bot, &grant, NOW);
            }
        });
    }
}
