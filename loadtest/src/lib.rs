//! `loadtest`: a load generator that plays local users over c2s and whole
//! remote domains over s2s against fedrouter or any XMPP server. The binary
//! is a thin shell over the scenarios; the smoke tests call them directly.

pub mod args;
pub mod chaos;
pub mod conn;
pub mod connect;
pub mod im;
pub mod local;
pub mod presence;
pub mod presence_track;
pub mod progress;
pub mod remote;
pub mod render;
pub mod report;
pub mod sampler;
pub mod soak;
pub mod stamp;
pub mod tracker;
pub mod world;

use std::io::IsTerminal;

use args::{Command, Output};
use report::Report;

/// Runs one command; `Some` with the report and where it goes for the
/// scenarios, `None` for commands that only write files.
pub async fn run(cmd: Command) -> anyhow::Result<Option<(Report, Output)>> {
    let progress = |o: &Output| !o.quiet && std::io::stderr().is_terminal();
    Ok(match cmd {
        Command::Im(a) => {
            let p = progress(&a.output);
            Some((im::run(&a, p).await?, a.output))
        }
        Command::Presence(a) => {
            let p = progress(&a.output);
            Some((presence::run(&a, p).await?, a.output))
        }
        Command::Connect(a) => {
            let p = progress(&a.output);
            Some((connect::run(&a, p).await?, a.output))
        }
        Command::Chaos(a) => {
            let p = progress(&a.output);
            Some((chaos::run(&a, p).await?, a.output))
        }
        Command::Soak(a) => {
            let p = progress(&a.output);
            Some((soak::run(&a, p).await?, a.output))
        }
        Command::Ca(a) => {
            remote::Material::write_new(&a.out, &a.remote_suffix)?;
            println!(
                "wrote {0}/ca.pem (trust it on the target for SASL EXTERNAL) and {0}/leaf.pem \
                 (the certificate of *.{1}); pass --ca-dir {0}",
                a.out.display(),
                a.remote_suffix
            );
            None
        }
    })
}
