//! The `caravan` command line.

mod cli;

use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            print!("{e}");
            return;
        }
        Err(e) => {
            // clap's message is several lines with usage; one line is enough.
            let first = e.to_string().lines().next().unwrap_or("invalid arguments").to_string();
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = cli::dispatch(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
