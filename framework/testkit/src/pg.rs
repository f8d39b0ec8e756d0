//! A PostgreSQL schema of a test's own on the server `SWITCHBOARD_TEST_PG` names, dropped when
//! the [`PgSchema`] is. Without the variable a test says on stderr that it was skipped, so
//! `cargo test` passes on a machine without PostgreSQL and CI (which sets it) runs them.

use std::io::Write as _;

use switchboard_protocol::Csprng;

/// The variable naming the test server (`postgres://user@host:port/db`).
pub const TEST_PG: &str = "SWITCHBOARD_TEST_PG";

/// A schema of its own in the test database; dropped (with everything in it) when this is.
#[derive(Debug)]
pub struct PgSchema {
    server: String,
    name: String,
}

impl PgSchema {
    /// A new schema named `prefix_<random hex>` for a test of `what`; `None`, after saying on
    /// the real stderr that the test of `what` is skipped, without [`TEST_PG`].
    ///
    /// # Panics
    /// If the server cannot be reached or refuses to create the schema (a test failure).
    #[allow(clippy::panic, clippy::expect_used)]
    pub async fn create(what: &str, prefix: &str) -> Option<Self> {
        let Ok(server) = std::env::var(TEST_PG) else {
            // The real stderr, not captured by the harness: skips must be visible.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {what} on PostgreSQL (set {TEST_PG}=postgres://... to run it)"
            );
            return None;
        };
        let bytes: [u8; 8] = Csprng::from_os()
            .expect("randomness for a schema name")
            .array();
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{prefix}_{suffix}");
        let pool = sqlx::PgPool::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("{TEST_PG}: cannot connect: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test schema {name}: {e}"));
        pool.close().await;
        Some(Self { server, name })
    }

    /// A URL of the test database whose `search_path` is this schema.
    #[must_use]
    pub fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options[search_path]={}",
            self.server, self.name
        )
    }

    /// The schema's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let server = self.server.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // On a thread of its own: this may run inside the test's runtime, or while panicking.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&server).await.ok()?;
                let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                pool.close().await;
                done.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop the test schema {}",
                self.name
            );
        }
    }
}
