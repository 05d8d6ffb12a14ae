//! `graph`: a workflow's dependency graph, as Mermaid or DOT.

#[allow(unused_imports)]
use super::*;

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
