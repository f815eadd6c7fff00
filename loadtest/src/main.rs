//! `loadtest`: see the crate documentation and `loadtest --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = loadtest::args::Cli::parse();
    eprintln!("loadtest: {:?} is not implemented yet", cli.command);
    std::process::ExitCode::from(2)
}
