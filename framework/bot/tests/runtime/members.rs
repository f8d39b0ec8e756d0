//! Member changes: an agent added to the bot's thread reaches `on_member` as `Joined`, its
//! removal as `Left`.

use super::*;

struct MemberBot {
    log: Log,
}

#[async_trait]
impl Bot for MemberBot {
    async fn on_thread(&self, cx: &mut Ctx, _: &ThreadInfo, _: &[Message]) -> Result<(), BotError> {
        cx.reply("hello").await.map(drop)
    }

    async fn on_member(&self, _cx: &mut Ctx, change: &MemberChange) -> Result<(), BotError> {
        let (what, who) = match change {
            MemberChange::Joined { who, .. } => ("joined", who),
            MemberChange::Left { who, .. } => ("left", who),
            _ => ("other", &Sender::Admin),
        };
        let who = match who {
            Sender::Agent { display_name, kind } => format!("{display_name} ({kind:?})"),
            other => format!("{other:?}"),
        };
        self.log.lock().unwrap().push(format!("{what}: {who}"));
        Ok(())
    }
}

/// Waits (bounded) until the log holds `line`.
async fn logged(log: &Log, line: &str) {
    for _ in 0..100 {
        if log.lock().unwrap().iter().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never logged {line:?}: {:?}", log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_sees_an_agent_join_and_leave_its_thread() {
    let mut world = World::new("bot-members").await;
    let log = Log::default();
    let store = Arc::clone(&world.store);
    let runtime = Runtime::builder()
        .keystore(&world.bot_keystore)
        .secret(secret())
        .store_backend(store)
        .instance("test-bot")
        .bot(MemberBot {
            log: Arc::clone(&log),
        })
        .build()
        .await
        .unwrap();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "my order").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["hello"]);

    world
        .with_admin(async |admin| admin.add_to_group(thread, "Dana").await.unwrap())
        .await;
    logged(&log, "joined: Dana (Human)").await;
    world
        .with_admin(async |admin| admin.remove_from_thread(thread, "Dana").await.unwrap())
        .await;
    logged(&log, "left: Dana (Human)").await;
    assert_eq!(
        *log.lock().unwrap(),
        ["joined: Dana (Human)", "left: Dana (Human)"]
    );
    stop(handle, task).await;
    world.stop_admin().await;
}
