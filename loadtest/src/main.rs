//! `loadtest`: see the crate documentation and `loadtest --help`.

use std::io::IsTerminal;

use clap::Parser;
use loadtest::args::{Cli, Output};
use loadtest::report::Report;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADTEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    fedrouter::tls::install_default_provider();
    fedrouter::transport::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(loadtest::run(cli.command)) {
        Ok(Some((report, output))) => emit(&report, &output),
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints the table (stderr when the JSON goes to stdout), writes JSON
/// and HTML; exit status 1 when the run failed its contract.
fn emit(report: &Report, out: &Output) -> std::process::ExitCode {
    let json_to_stdout = out.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let table = report.to_table();
    if json_to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    if let Some(p) = &out.json {
        let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        if json_to_stdout {
            println!("{text}");
        } else if let Err(e) = std::fs::write(p, text + "\n") {
            eprintln!("loadtest: writing {}: {e}", p.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Some(dir) = &out.report {
        match report.write_html(dir) {
            Ok(path) => {
                if std::io::stderr().is_terminal() {
                    eprintln!("report: {}", path.display());
                }
            }
            Err(e) => {
                eprintln!("loadtest: writing the report into {}: {e}", dir.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
