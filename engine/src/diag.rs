//! Validation problems, each with `file:line:col`, rendered like a compiler.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::yaml::Loc;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub loc: Loc,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, loc: Loc, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), loc, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `path:line:col: error: message`, the offending line, a caret, and the hint.
    pub fn render(&self) -> String {
        let mut out = format!("{}:{}: error: {}\n", self.file.display(), self.loc, self.message);
        if self.loc.line > 0 {
            if let Ok(text) = std::fs::read_to_string(&self.file) {
                if let Some(line) = text.lines().nth(self.loc.line as usize - 1) {
                    let gutter = self.loc.line.to_string();
                    let pad = " ".repeat(gutter.len());
                    let col = (self.loc.col.max(1) - 1) as usize;
                    let width = underline_width(line, col);
                    out.push_str(&format!(
                        "{pad} |\n{gutter} | {line}\n{pad} | {}{}\n",
                        " ".repeat(col),
                        "^".repeat(width)
                    ));
                }
            }
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.loc, self.message)
    }
}

/// How many characters of `line` from `col` make the offending token: a
/// quoted string whole, otherwise up to a space or YAML punctuation.
fn underline_width(line: &str, col: usize) -> usize {
    let mut chars = line.chars().skip(col);
    match chars.next() {
        Some(q @ ('"' | '\'')) => 2 + chars.take_while(|c| *c != q).count(),
        Some(_) => 1 + chars.take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | ']' | '}')).count(),
        None => 1,
    }
}

/// All the problems found in one workflow, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| (&a.file, a.loc).cmp(&(&b.file, b.loc)));
        self.0.dedup();
    }
    pub fn render(&self) -> String {
        let mut out: String = self.0.iter().map(|d| d.render() + "\n").collect();
        let n = self.0.len();
        out.push_str(&format!("{n} problem{} found; nothing was run.\n", if n == 1 { "" } else { "s" }));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest candidate by edit distance, if close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_underline_covers_the_token_and_no_punctuation() {
        assert_eq!(underline_width("    needs: [ghost]", 12), 5);
        assert_eq!(underline_width(r#"    run: "echo ${{ x }}" # c"#, 9), 15);
        assert_eq!(underline_width("a", 5), 1);
    }

    #[test]
    fn suggests_the_closest_name_for_a_typo() {
        assert_eq!(closest("shel", ["shell", "sleep", "wait.http"]), Some("shell"));
        assert_eq!(closest("wait.htp", ["shell", "sleep", "wait.http"]), Some("wait.http"));
        assert_eq!(closest("kubernetes", ["shell", "sleep"]), None);
    }
}
