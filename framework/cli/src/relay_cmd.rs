//! `switchboard relay`: flags and the config file.

use std::path::PathBuf;

use switchboard_relay::http::Rate;
use switchboard_relay::server::ServerConfig;

/// Run the relay server.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// Database: `sqlite://PATH` (created if missing), `sqlite::memory:`, or `postgres://...`.
    #[arg(long, default_value = "sqlite://switchboard-relay.db")]
    db: String,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: String,
    /// A TOML file of settings: `header_read_secs`, `max_connections`, `shutdown_grace_secs`
    /// and a `[limits]` table (`customer`, `agent`, `admin`, `entity`, `registration` as
    /// `{ per_second = N, burst = M }`, `strikes_to_ban`, `first_ban_secs`, `max_ban_secs`,
    /// `max_tracked`, `unverified_body_bytes`, `body_read_secs`, `max_sessions`). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds to send a request head (also the idle keep-alive timeout). Default 10.
    #[arg(long)]
    header_timeout_secs: Option<u64>,
    /// Seconds for a whole request body to arrive. Default 20.
    #[arg(long)]
    body_timeout_secs: Option<u64>,
    /// Connections open at once; more are closed at once. Default 4096 (fewer if the limit on
    /// open files is lower).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds requests in flight get to finish on SIGTERM/SIGINT. Default 10.
    #[arg(long)]
    shutdown_grace_secs: Option<u64>,
    /// Rate limit of each customer device, PER_SECOND/BURST. Default 20/200.
    #[arg(long, value_parser = parse_rate)]
    customer_rate: Option<Rate>,
    /// Rate limit of each agent device (bots, people), PER_SECOND/BURST. Default 200/2000.
    #[arg(long, value_parser = parse_rate)]
    agent_rate: Option<Rate>,
    /// Rate limit of each admin device, PER_SECOND/BURST. Default 500/5000.
    #[arg(long, value_parser = parse_rate)]
    admin_rate: Option<Rate>,
    /// Rate shared by an entity's admin and agents together, PER_SECOND/BURST. Default
    /// 2000/20000.
    #[arg(long, value_parser = parse_rate)]
    entity_rate: Option<Rate>,
    /// Registrations per source address, PER_SECOND/BURST. Default 1/60.
    #[arg(long, value_parser = parse_rate)]
    registration_rate: Option<Rate>,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let (per_second, burst) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not PER_SECOND/BURST (e.g. 20/200)"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{s:?} in {text:?} is not a whole number above 0"))
    };
    Ok(Rate::new(number(per_second)?, number(burst)?))
}

impl RelayArgs {
    /// The server configuration: defaults, then the config file, then the flags.
    fn config(&self) -> Result<ServerConfig, String> {
        let mut config = match &self.config {
            None => ServerConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| format!("{} is not a valid relay config: {e}", path.display()))?
            }
        };
        let limits = &mut config.limits;
        for (flag, slot) in [
            (self.customer_rate, &mut limits.customer),
            (self.agent_rate, &mut limits.agent),
            (self.admin_rate, &mut limits.admin),
            (self.entity_rate, &mut limits.entity),
            (self.registration_rate, &mut limits.registration),
        ] {
            if let Some(rate) = flag {
                *slot = rate;
            }
        }
        if let Some(secs) = self.body_timeout_secs {
            limits.body_read_secs = secs;
        }
        if let Some(secs) = self.header_timeout_secs {
            config.header_read_secs = secs;
        }
        if let Some(n) = self.max_connections {
            config.max_connections = n;
        }
        if let Some(secs) = self.shutdown_grace_secs {
            config.shutdown_grace_secs = secs;
        }
        Ok(config)
    }
}

/// Runs `switchboard relay` until SIGINT or SIGTERM.
pub(crate) async fn run(args: RelayArgs) -> Result<(), String> {
    let config = args.config()?;
    switchboard_relay::server::run(&args.db, &args.listen, config, crate::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        relay: super::RelayArgs,
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-relay-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "max_connections = 100\n[limits]\nagent = { per_second = 7, burst = 70 }\nadmin = { per_second = 9, burst = 90 }\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "relay",
            "--config",
            file.to_str().unwrap(),
            "--admin-rate",
            "1000/10000",
        ])
        .unwrap();
        let config = cli.relay.config().unwrap();
        assert_eq!(config.max_connections, 100);
        assert_eq!(
            config.limits.agent,
            switchboard_relay::http::Rate::new(7, 70)
        );
        assert_eq!(
            config.limits.admin,
            switchboard_relay::http::Rate::new(1000, 10_000)
        );
        std::fs::write(&file, "[limits]\nagents = 3\n").unwrap();
        let err = cli.relay.config().unwrap_err();
        assert!(err.contains("agents"), "{err}");
        assert!(Cli::try_parse_from(["relay", "--customer-rate", "fast"]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
