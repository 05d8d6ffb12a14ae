//! `steps`: the step kinds this build knows, and one kind's documentation.

#[allow(unused_imports)]
use super::*;

pub(super) fn steps_command(registry: &Registry, what: Option<StepsCommand>) -> Result<(), CliError> {
    match what {
        None => {
            for name in registry.names() {
                let doc = registry.get(name).expect("listed").doc();
                out!("{name:<24} {}", doc.summary);
            }
            Ok(())
        }
        Some(StepsCommand::Describe { kind }) => {
            let Some(k) = registry.get(&kind) else {
                let names: Vec<&str> = registry.names().collect();
                let hint = ca_a2a_flow_engine::diag::closest(&kind, names.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(CliError::Usage(format!("unknown step kind `{kind}`{hint}; known: {}", names.join(", "))));
            };
            let doc = k.doc();
            out!("{kind}: {}\n\nparameters:", doc.summary);
            for (name, ty, desc) in k.params() {
                out!("  {name:<18} {ty:<9} {desc}");
            }
            if k.params().is_empty() {
                out!("  (none)");
            }
            out!("\noutputs:");
            for (name, desc) in doc.outputs {
                out!("  {name:<18} {desc}");
            }
            if doc.outputs.is_empty() {
                out!("  (none)");
            }
            if let Some(d) = k.deadline() {
                out!(
                    "\ndeadline: {} in all, {} an attempt (unless the step sets `timeout` / `attempt_timeout`)",
                    ca_a2a_flow_engine::duration::format(d.total),
                    ca_a2a_flow_engine::duration::format(d.attempt)
                );
            }
            out!("\nexample:\n{}", doc.example.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));
            Ok(())
        }
    }
}
