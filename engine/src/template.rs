//! `${{ ... }}` templates: `inputs.x`, `steps.id.outputs.key`, `env.NAME`, `run.id`.
//!
//! A string that is exactly one expression keeps the referenced value's JSON type;
//! otherwise expressions are interpolated as text.

use std::collections::BTreeMap;

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Input(String),
    StepOutput { step: String, output: String },
    Env(String),
    RunId,
    RunName,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Expr(Ref),
}

/// Splits a string into text and references; `Err` explains a malformed template.
fn segments(s: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            out.push(Segment::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `${{{{` in `{s}` (close it with `}}}}`)"))?;
        out.push(Segment::Expr(parse_ref(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_string()));
    }
    Ok(out)
}

fn parse_ref(expr: &str) -> Result<Ref, String> {
    let parts: Vec<&str> = expr.split('.').collect();
    let ok_name = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !parts.iter().all(|p| ok_name(p)) {
        return Err(format!("`{expr}` is not a valid reference"));
    }
    match parts.as_slice() {
        ["inputs", name] => Ok(Ref::Input(name.to_string())),
        ["steps", step, "outputs", output] => {
            Ok(Ref::StepOutput { step: step.to_string(), output: output.to_string() })
        }
        ["env", name] => Ok(Ref::Env(name.to_string())),
        ["run", "id"] => Ok(Ref::RunId),
        ["run", "name"] => Ok(Ref::RunName),
        _ => Err(format!(
            "`{expr}` is not a known reference (use inputs.NAME, steps.ID.outputs.KEY, env.NAME, run.id or run.name)"
        )),
    }
}

/// Every reference in a string, or the reason it is malformed.
pub fn references(s: &str) -> Result<Vec<Ref>, String> {
    Ok(segments(s)?
        .into_iter()
        .filter_map(|seg| match seg {
            Segment::Expr(r) => Some(r),
            Segment::Text(_) => None,
        })
        .collect())
}

/// Every reference inside a JSON value.
pub fn references_in(value: &Json, out: &mut Vec<Ref>) {
    match value {
        Json::String(s) => out.extend(references(s).unwrap_or_default()),
        Json::Array(items) => items.iter().for_each(|v| references_in(v, out)),
        Json::Object(map) => map.values().for_each(|v| references_in(v, out)),
        _ => {}
    }
}

pub fn contains_template(s: &str) -> bool {
    s.contains("${{")
}

/// What templates resolve against when a step attempt starts.
pub struct Scope<'a> {
    pub run_id: &'a str,
    pub run_name: &'a str,
    pub inputs: &'a BTreeMap<String, Json>,
    /// Outputs of succeeded steps. Secret outputs are absent (never stored).
    pub outputs: &'a BTreeMap<String, BTreeMap<String, Json>>,
    /// Which outputs are secret: `(step, key)`.
    pub secret: &'a dyn Fn(&str, &str) -> bool,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Scope<'_> {
    fn lookup(&self, r: &Ref) -> Result<Json, String> {
        match r {
            Ref::Input(name) => self.inputs.get(name).cloned().ok_or_else(|| format!("input `{name}` has no value")),
            Ref::StepOutput { step, output } => {
                if (self.secret)(step, output) {
                    return Err(format!(
                        "`steps.{step}.outputs.{output}` is a secret output: it is never stored, so it cannot be passed; pass a reference to it (for example a Secrets Manager ARN) instead"
                    ));
                }
                self.outputs
                    .get(step)
                    .and_then(|o| o.get(output))
                    .cloned()
                    .ok_or_else(|| format!("step `{step}` did not produce output `{output}`"))
            }
            Ref::Env(name) => {
                (self.env)(name).map(Json::String).ok_or_else(|| format!("environment variable `{name}` is not set"))
            }
            Ref::RunId => Ok(Json::String(self.run_id.to_string())),
            Ref::RunName => Ok(Json::String(self.run_name.to_string())),
        }
    }

    /// Resolves what can be resolved now and leaves the rest as written (a
    /// value that needs outputs no run has made yet).
    pub fn resolve_partial(&self, value: &Json) -> Json {
        match value {
            Json::String(s) if contains_template(s) => self.resolve(value).unwrap_or_else(|_| value.clone()),
            Json::Array(items) => Json::Array(items.iter().map(|v| self.resolve_partial(v)).collect()),
            Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), self.resolve_partial(v))).collect()),
            other => other.clone(),
        }
    }

    /// Resolves every template in `value`.
    pub fn resolve(&self, value: &Json) -> Result<Json, String> {
        match value {
            Json::String(s) if contains_template(s) => {
                let segs = segments(s)?;
                if let [Segment::Expr(r)] = segs.as_slice() {
                    return self.lookup(r);
                }
                let mut out = String::new();
                for seg in segs {
                    match seg {
                        Segment::Text(t) => out.push_str(&t),
                        Segment::Expr(r) => match self.lookup(&r)? {
                            Json::String(s) => out.push_str(&s),
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Ok(Json::String(out))
            }
            Json::Array(items) => items.iter().map(|v| self.resolve(v)).collect::<Result<_, _>>().map(Json::Array),
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                .collect::<Result<_, String>>()
                .map(Json::Object),
            other => Ok(other.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope_with<'a>(
        inputs: &'a BTreeMap<String, Json>,
        outputs: &'a BTreeMap<String, BTreeMap<String, Json>>,
    ) -> Scope<'a> {
        Scope {
            run_id: "r-1",
            run_name: "demo",
            inputs,
            outputs,
            secret: &|step, key| step == "db" && key == "password",
            env: &|name| (name == "HOME").then(|| "/root".to_string()),
        }
    }

    #[test]
    fn a_lone_expression_keeps_its_type_and_text_is_interpolated() {
        let inputs = BTreeMap::from([("count".to_string(), json!(3)), ("region".to_string(), json!("eu-west-3"))]);
        let outputs = BTreeMap::from([("vpc".to_string(), BTreeMap::from([("id".to_string(), json!("vpc-1"))]))]);
        let scope = scope_with(&inputs, &outputs);
        assert_eq!(scope.resolve(&json!("${{ inputs.count }}")).unwrap(), json!(3));
        assert_eq!(
            scope.resolve(&json!({"a": "${{steps.vpc.outputs.id}} in ${{ inputs.region }} by ${{ run.id }}"})).unwrap(),
            json!({"a": "vpc-1 in eu-west-3 by r-1"})
        );
        assert_eq!(scope.resolve(&json!("${{ env.HOME }}")).unwrap(), json!("/root"));
    }

    #[test]
    fn secrets_missing_env_and_malformed_templates_are_explained() {
        let (inputs, outputs) = (BTreeMap::new(), BTreeMap::new());
        let scope = scope_with(&inputs, &outputs);
        assert!(scope.resolve(&json!("${{ steps.db.outputs.password }}")).unwrap_err().contains("secret output"));
        assert!(scope.resolve(&json!("${{ env.NOPE }}")).unwrap_err().contains("`NOPE` is not set"));
        assert!(references("${{ inputs.x").unwrap_err().contains("unclosed"));
        assert!(references("${{ foo.bar }}").unwrap_err().contains("not a known reference"));
    }

    #[test]
    fn references_are_found_anywhere_in_a_value() {
        let mut refs = Vec::new();
        references_in(&json!({"a": ["x ${{ steps.b.outputs.c }}"], "d": "${{ inputs.e }}"}), &mut refs);
        assert_eq!(refs.len(), 2);
        assert!(refs.contains(&Ref::Input("e".into())));
    }
}
