//! `loadtest`: plays local users over c2s and (later) whole remote domains
//! over s2s against fedrouter or any XMPP server. The scenarios arrive with
//! the load-test issue; this skeleton fixes the command-line shape.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", about = "Load generator for XMPP servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Local users chatting with federated contacts.
    Im,
    /// Presence fan-out to federated contacts.
    Presence,
    /// A reconnect storm of remote domains and local sessions.
    Connect,
    /// Mixed load over time.
    Soak,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let name = match cli.scenario {
        Scenario::Im => "im",
        Scenario::Presence => "presence",
        Scenario::Connect => "connect",
        Scenario::Soak => "soak",
    };
    eprintln!("loadtest: the {name} scenario is not implemented yet");
    std::process::ExitCode::from(2)
}
