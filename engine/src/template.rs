//! `${{ ... }}` templates: `inputs.x`, `steps.id.outputs.key`, `env.NAME`, `run.id`,
//! and a reference compared with a literal, `inputs.build_on == 'builder'` (or
//! `!=`), which is `true` or `false` (for `when:`).
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
    Expr(Expr),
}

/// One `${{ … }}`: a reference, maybe compared with a literal.
#[derive(Debug, Clone, PartialEq)]
struct Expr {
    r: Ref,
    /// `Some((equal, literal))` for `== literal` (`true`) or `!= literal` (`false`).
    compared: Option<(bool, String)>,
}

/// `REF`, `REF == LITERAL` or `REF != LITERAL`; a literal is quoted ('…' or
/// "…") or a bare word (`true`, `3`).
fn parse_expr(expr: &str) -> Result<Expr, String> {
    // The first operator: one inside the literal after it is text.
    let operators = [expr.find("==").map(|i| (i, true)), expr.find("!=").map(|i| (i, false))];
    let Some((at, equal)) = operators.into_iter().flatten().min_by_key(|(i, _)| *i) else {
        return Ok(Expr { r: parse_ref(expr)?, compared: None });
    };
    let (left, right) = (expr[..at].trim(), expr[at + 2..].trim());
    let literal = match right.as_bytes() {
        [q @ (b'\'' | b'"'), .., last] if last == q && right.len() >= 2 => right[1..right.len() - 1].to_string(),
        _ if !right.is_empty() && right.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            right.to_string()
        }
        _ => return Err(format!("`{expr}`: compare a reference with a quoted text ('builder') or a bare word")),
    };
    Ok(Expr { r: parse_ref(left)?, compared: Some((equal, literal)) })
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
        out.push(Segment::Expr(parse_expr(after[..end].trim())?));
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
    // A step made by `for_each` is `ID[ITEM]`.
    let ok_step = |p: &str| match p.strip_suffix(']').and_then(|p| p.split_once('[')) {
        Some((id, item)) => ok_name(id) && ok_name(item),
        None => ok_name(p),
    };
    let valid = match parts.as_slice() {
        ["steps", step, rest @ ..] => ok_step(step) && rest.iter().all(|p| ok_name(p)),
        _ => parts.iter().all(|p| ok_name(p)),
    };
    if !valid {
        if expr == "item" || expr.starts_with("item.") || expr.contains("[item]") {
            return Err(format!("`{expr}`: `item` is known only in a step with `for_each`"));
        }
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
        ["item", ..] => Err(format!("`{expr}`: `item` is known only in a step with `for_each`")),
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
            Segment::Expr(e) => Some(e.r),
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
    /// An expression's value: the reference's, or whether it compares as written.
    fn value(&self, e: &Expr) -> Result<Json, String> {
        let value = self.lookup(&e.r)?;
        Ok(match &e.compared {
            None => value,
            Some((equal, literal)) => {
                let text = match &value {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Json::Bool((text == *literal) == *equal)
            }
        })
    }

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

    /// Resolves every template in `value` but those of `env.*`, which stay as
    /// written (for a definition that is stored: environment values never are).
    pub fn resolve_but_env(&self, value: &Json) -> Result<Json, String> {
        self.resolve_keeping(value, true)
    }

    /// Resolves every template in `value`.
    pub fn resolve(&self, value: &Json) -> Result<Json, String> {
        self.resolve_keeping(value, false)
    }

    /// Resolves the templates in `value`, leaving `env.*` ones as written when
    /// `keep_env`. A string that is one template takes the value's own type.
    fn resolve_keeping(&self, value: &Json, keep_env: bool) -> Result<Json, String> {
        match value {
            Json::String(s) if contains_template(s) => {
                let segs = segments(s)?;
                if let [Segment::Expr(e)] = segs.as_slice() {
                    if !(keep_env && matches!(e.r, Ref::Env(_))) {
                        return self.value(e);
                    }
                }
                let mut out = String::new();
                for seg in segs {
                    match seg {
                        Segment::Text(t) => out.push_str(&t),
                        Segment::Expr(Expr { r: Ref::Env(name), compared: None }) if keep_env => {
                            out.push_str(&format!("${{{{ env.{name} }}}}"))
                        }
                        Segment::Expr(e) => match self.value(&e)? {
                            Json::String(s) => out.push_str(&s),
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Ok(Json::String(out))
            }
            Json::Array(items) => {
                items.iter().map(|v| self.resolve_keeping(v, keep_env)).collect::<Result<_, _>>().map(Json::Array)
            }
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.resolve_keeping(v, keep_env)?)))
                .collect::<Result<_, String>>()
                .map(Json::Object),
            other => Ok(other.clone()),
        }
    }
}

/// The environment variables through which a script's templated values reach
/// it: `FLOW_VALUE_1`, `FLOW_VALUE_2`, …
pub const BOUND_PREFIX: &str = "FLOW_VALUE_";

impl Scope<'_> {
    /// Resolves the templates of a POSIX shell script without pasting any value
    /// into its text: each `${{ … }}` becomes a reference to an environment
    /// variable (appended to `values`), quoted for the place it stands in, so
    /// `$(…)`, backquotes, `;`, quotes and newlines in a value stay text.
    ///
    /// | where the template stands | what the script reads |
    /// |---|---|
    /// | unquoted | `"${FLOW_VALUE_n}"`: one word, never split or globbed |
    /// | inside `"…"` or an unquoted here-document | `${FLOW_VALUE_n}` |
    /// | inside `'…'` | `'"${FLOW_VALUE_n}"'` (the quote closed, then reopened) |
    /// | inside a quoted here-document (`<<'EOF'`) | the value itself: nothing there is expanded |
    pub fn bind_script(&self, script: &str, values: &mut Vec<(String, String)>) -> Result<String, String> {
        let mut out = String::new();
        let mut shell = ShellState::default();
        for seg in segments(script)? {
            match seg {
                Segment::Text(t) => {
                    shell.feed(&t);
                    out.push_str(&t);
                }
                Segment::Expr(e) => {
                    let value = match self.value(&e)? {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    if shell.in_quoted_heredoc() {
                        shell.feed(&value);
                        out.push_str(&value);
                        continue;
                    }
                    let name = format!("{BOUND_PREFIX}{}", values.len() + 1);
                    values.push((name.clone(), value));
                    let reference = match shell.quote {
                        _ if shell.heredoc.is_some() => format!("${{{name}}}"),
                        Quote::None => format!("\"${{{name}}}\""),
                        Quote::Single => format!("'\"${{{name}}}\"'"),
                        Quote::Double | Quote::Comment => format!("${{{name}}}"),
                    };
                    // The reference is not text of the script's own: the state
                    // it leaves is the state before it.
                    shell.after_reference();
                    out.push_str(&reference);
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Quote {
    #[default]
    None,
    Single,
    Double,
    Comment,
}

/// Enough of the POSIX shell grammar to know, at any point of a script, whether
/// it stands unquoted, in quotes, in a comment or in a here-document body.
#[derive(Debug, Default)]
struct ShellState {
    quote: Quote,
    escaped: bool,
    /// At the start of a word (for `#` comments).
    word_start: bool,
    /// Here-documents announced on the current line: (delimiter, quoted, strip tabs).
    pending: Vec<(String, bool, bool)>,
    /// The here-document whose body we are in, and the body line so far.
    heredoc: Option<(String, bool, bool)>,
    line: String,
    /// Characters still to skip (a here-document operator already read).
    skip: usize,
}

impl ShellState {
    fn in_quoted_heredoc(&self) -> bool {
        self.heredoc.as_ref().is_some_and(|(_, quoted, _)| *quoted)
    }

    fn after_reference(&mut self) {
        self.word_start = false;
        if self.heredoc.is_some() {
            self.line.push('$');
        }
    }

    fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        for i in 0..chars.len() {
            let c = chars[i];
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if let Some((delim, _, strip)) = &self.heredoc {
                if c == '\n' {
                    let line = if *strip { self.line.trim_start_matches('\t') } else { self.line.as_str() };
                    if line == delim {
                        self.heredoc = if self.pending.is_empty() { None } else { Some(self.pending.remove(0)) };
                        self.word_start = true;
                    }
                    self.line.clear();
                } else {
                    self.line.push(c);
                }
                continue;
            }
            if self.escaped {
                self.escaped = false;
                self.word_start = false;
                continue;
            }
            match self.quote {
                Quote::Comment => {
                    if c == '\n' {
                        self.quote = Quote::None;
                        self.end_of_line();
                    }
                }
                Quote::Single => {
                    if c == '\'' {
                        self.quote = Quote::None;
                    }
                }
                Quote::Double => match c {
                    '\\' => self.escaped = true,
                    '"' => self.quote = Quote::None,
                    _ => {}
                },
                Quote::None => {
                    match c {
                        '\\' => self.escaped = true,
                        '\'' => self.quote = Quote::Single,
                        '"' => self.quote = Quote::Double,
                        '#' if self.word_start => self.quote = Quote::Comment,
                        '\n' => self.end_of_line(),
                        '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                            self.skip = self.heredoc_operator(&chars[i + 2..]) + 1;
                        }
                        _ => {}
                    }
                    self.word_start = c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')');
                }
            }
        }
    }

    fn end_of_line(&mut self) {
        self.word_start = true;
        if !self.pending.is_empty() {
            self.heredoc = Some(self.pending.remove(0));
            self.line.clear();
        }
    }

    /// Reads `[-] WORD` after `<<`; returns how many characters it took.
    fn heredoc_operator(&mut self, rest: &[char]) -> usize {
        let mut i = 0;
        let strip = rest.first() == Some(&'-');
        if strip {
            i += 1;
        }
        while rest.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
            i += 1;
        }
        let (mut word, mut quoted) = (String::new(), false);
        while let Some(&c) = rest.get(i) {
            if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')') {
                break;
            }
            if c == '\'' || c == '"' {
                quoted = true;
                let close = rest[i + 1..].iter().position(|d| *d == c).map_or(rest.len(), |p| i + 1 + p);
                word.extend(&rest[i + 1..close.min(rest.len())]);
                i = close + 1;
                continue;
            }
            if c == '\\' {
                quoted = true;
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
        }
        if !word.is_empty() {
            self.pending.push((word, quoted, strip));
        }
        i.min(rest.len())
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
    fn a_reference_compared_with_a_literal_is_true_or_false_and_still_a_dependency() {
        let inputs = BTreeMap::from([("build_on".to_string(), json!("builder")), ("count".to_string(), json!(3))]);
        let outputs = BTreeMap::new();
        let scope = scope_with(&inputs, &outputs);
        let is = |t: &str| scope.resolve(&json!(t)).unwrap();
        assert_eq!(is("${{ inputs.build_on == 'builder' }}"), json!(true));
        assert_eq!(is("${{ inputs.build_on == \"local\" }}"), json!(false));
        assert_eq!(is("${{ inputs.build_on != 'local' }}"), json!(true));
        assert_eq!(is("${{ inputs.build_on != 'a==b' }}"), json!(true), "an operator inside the literal is text");
        assert_eq!(is("${{ inputs.count == 3 }}"), json!(true), "a number compares by its text");
        assert_eq!(is("on the builder: ${{ inputs.build_on == builder }}"), json!("on the builder: true"));
        assert_eq!(
            references("${{ steps.b.outputs.x != 'y' }}").unwrap(),
            [Ref::StepOutput { step: "b".into(), output: "x".into() }]
        );
        for bad in ["${{ inputs.a == }}", "${{ inputs.a == 'x }}", "${{ inputs.a == a b }}", "${{ 'x' == inputs.a }}"] {
            assert!(references(bad).is_err(), "{bad} is refused");
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

    fn bound(script: &str, value: &str) -> (String, Vec<(String, String)>) {
        let inputs = BTreeMap::from([("v".to_string(), json!(value))]);
        let outputs = BTreeMap::new();
        let scope = scope_with(&inputs, &outputs);
        let mut values = Vec::new();
        let text = scope.bind_script(script, &mut values).unwrap();
        (text, values)
    }

    #[test]
    fn a_script_refers_to_each_value_quoted_for_where_it_stands() {
        let (text, values) =
            bound("echo ${{ inputs.v }} \"a ${{ inputs.v }}\" 'b ${{ inputs.v }}' # ${{ inputs.v }}", "$(x)");
        assert_eq!(text, r#"echo "${FLOW_VALUE_1}" "a ${FLOW_VALUE_2}" 'b '"${FLOW_VALUE_3}"'' # ${FLOW_VALUE_4}"#);
        assert_eq!(values.len(), 4);
        assert!(values.iter().all(|(_, v)| v == "$(x)"));
    }

    #[test]
    fn escapes_and_quotes_inside_quotes_do_not_confuse_the_state() {
        let (text, _) = bound(r#"echo "it\"s ${{ inputs.v }}" it\'s ${{ inputs.v }}"#, "x");
        assert_eq!(text, r#"echo "it\"s ${FLOW_VALUE_1}" it\'s "${FLOW_VALUE_2}""#);
    }

    #[test]
    fn a_here_document_expands_unquoted_and_a_quoted_one_gets_the_text() {
        let (text, values) = bound(
            "cat <<EOF\nvalue ${{ inputs.v }}\nEOF\ncat <<'END'\nraw ${{ inputs.v }}\nEND\necho ${{ inputs.v }}\n",
            "v1",
        );
        assert_eq!(text, "cat <<EOF\nvalue ${FLOW_VALUE_1}\nEOF\ncat <<'END'\nraw v1\nEND\necho \"${FLOW_VALUE_2}\"\n");
        assert_eq!(values.len(), 2);
    }

    #[test]
    fn references_are_found_anywhere_in_a_value() {
        let mut refs = Vec::new();
        references_in(&json!({"a": ["x ${{ steps.b.outputs.c }}"], "d": "${{ inputs.e }}"}), &mut refs);
        assert_eq!(refs.len(), 2);
        assert!(refs.contains(&Ref::Input("e".into())));
    }
}
