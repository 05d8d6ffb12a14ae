//! The one question asked before what cannot be undone (`approve:` steps,
//! `destroy`): on a terminal, typed; without one, refused unless `--yes`.

use std::io::{BufRead, IsTerminal, Write};

use super::CliError;

/// Says `what` and each of `listed`, then asks to type `word`. `--yes` approves
/// without asking (and says so); without a terminal and without `--yes`, the
/// refusal is an error that lists the same lines.
pub(super) fn confirm(what: &str, listed: Vec<String>, word: &str, yes: bool) -> Result<bool, CliError> {
    let lines: String = listed.iter().map(|l| format!("\n  - {l}")).collect();
    if yes {
        eprintln!("{what} (approved with --yes):{lines}");
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed { what: what.to_string(), listed });
    }
    eprintln!("{what}:{lines}");
    eprint!("Type `{word}` to go on: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() != word {
        eprintln!("not approved: nothing was done");
        return Ok(false);
    }
    Ok(true)
}
