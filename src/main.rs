//! `ca-a2a-flow`: deploy and operate the CA-A2A stack with durable workflows.

mod cli;
mod commands;
mod error;
mod progress;

fn main() {
    let code = commands::main(cli::parse());
    std::process::exit(code);
}
