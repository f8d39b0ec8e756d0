//! Run: `cargo run -p switchboard-examples --example twenty_line_bot` in a directory holding an
//! agent's `echo.keystore` and `echo.key` (`switchboard agent init`, enrolled by the admin).
//! The 20-line bot of README.md and of the `switchboard` crate docs (a test keeps the three equal).

use switchboard::prelude::*;

struct Echo;

#[async_trait]
impl Bot for Echo {
    async fn on_thread(&self, cx: &mut Ctx, _: &ThreadInfo, h: &[Message]) -> Result<(), BotError> {
        match h.iter().find(|m| m.is_from_customer()) {
            Some(first) => self.on_message(cx, first).await,
            None => Ok(()),
        }
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        cx.reply(format!("You said: {}", msg.text())).await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BotError> {
    let builder = Runtime::builder().keystore("echo.keystore");
    let runtime = builder.key_file("echo.key").bot(Echo).build().await?;
    runtime.run_until_shutdown().await
}
