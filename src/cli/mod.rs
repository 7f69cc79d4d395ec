//! Subcommands: argument definitions and dispatch.

mod batch;
mod bench;
mod compute_args;
mod engine_args;
mod models;
mod run;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "caravan", version, about = "An LLM inference server whose heart is true batching")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install a model: a known name (default smollm2:135m), a .gguf file or a URL
    Pull(models::PullArgs),
    /// List installed models
    List,
    /// Show an installed model's details
    Show { name: String },
    /// Remove an installed model
    Rm {
        /// The model's name
        name: String,
    },
    /// Generate from a prompt, streaming the answer to the terminal
    Run(run::RunArgs),
    /// Run a file of requests (OpenAI batch JSONL, or one prompt per line) together
    Batch(batch::BatchArgs),
    /// Measure prefill and decode speed
    Bench(bench::BenchArgs),
    /// Serve the Ollama and OpenAI HTTP APIs and the batch API
    Serve(Box<serve::ServeArgs>),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pull(a) => models::pull(a),
        Command::List => models::list(),
        Command::Show { name } => models::show(&name),
        Command::Rm { name } => models::rm(&name),
        Command::Run(a) => run::run(a),
        Command::Batch(a) => batch::batch(a),
        Command::Bench(a) => bench::bench(a),
        Command::Serve(a) => serve::serve(*a),
    }
}
