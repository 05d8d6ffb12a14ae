//! `graph` and `steps`: a workflow's dependency graph, the step kinds.

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
            for (name, ty, desc) in &doc.params {
                out!("  {name:<18} {ty:<9} {desc}");
            }
            if doc.params.is_empty() {
                out!("  (none)");
            }
            out!("\noutputs:");
            for (name, desc) in &doc.outputs {
                out!("  {name:<18} {desc}");
            }
            if doc.outputs.is_empty() {
                out!("  (none)");
            }
            out!("\nexample:\n{}", doc.example.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));
            Ok(())
        }
    }
}

pub(super) fn graph(wf: &Workflow, format: GraphFormat) -> String {
    match format {
        GraphFormat::Mermaid => mermaid(wf, |_| None),
        GraphFormat::Dot => dot(wf, |_| None),
    }
}

/// The dependency graph as Mermaid: a node per step (`id (kind)`, then `: note`
/// when there is one, such as the plan's action), an edge per need.
pub(super) fn mermaid(wf: &Workflow, note: impl Fn(&StepDef) -> Option<String>) -> String {
    let mut out = String::from("flowchart TD\n");
    for s in &wf.steps {
        let note = note(s).map(|n| format!(": {n}")).unwrap_or_default();
        out.push_str(&format!("  {}[\"{} ({}){note}\"]\n", node_id(&s.id), s.id, s.uses));
    }
    for s in &wf.steps {
        for n in &s.needs {
            out.push_str(&format!("  {} --> {}\n", node_id(n), node_id(&s.id)));
        }
    }
    out
}

/// The dependency graph as DOT, with the same nodes, notes and edges.
pub(super) fn dot(wf: &Workflow, note: impl Fn(&StepDef) -> Option<String>) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=TB;\n", wf.name);
    for s in &wf.steps {
        let note = note(s).map(|n| format!("\\n{n}")).unwrap_or_default();
        out.push_str(&format!("  \"{}\" [label=\"{}\\n{}{note}\"];\n", s.id, s.id, s.uses));
    }
    for s in &wf.steps {
        for n in &s.needs {
            out.push_str(&format!("  \"{n}\" -> \"{}\";\n", s.id));
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid node ids cannot contain `-` nor the brackets of a `for_each` step.
pub(super) fn node_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
