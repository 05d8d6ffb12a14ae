//! `ca-a2a-flow`: deploy and operate the CA-A2A stack with durable workflows.

mod cli;
mod commands;
mod error;
mod progress;

fn main() {
    // A panic's message may quote a value that was secret; a step's panic is
    // recorded (masked) as that step's error, so the terminal gets only where.
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "ca-a2a-flow: internal error (panic) at {place}; its message is not printed, as it may hold a secret value (a step's panic is recorded as its error, masked)"
        );
    }));
    let code = commands::main(cli::parse());
    std::process::exit(code);
}
