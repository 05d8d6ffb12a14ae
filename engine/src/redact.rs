//! Masks secret values in everything the engine shows or stores.

use std::sync::{Arc, RwLock};

pub const MASK: &str = "***";

/// Shared by every step of a run; a value added once is masked everywhere after.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !secrets.iter().any(|s| s == value) {
            secrets.push(value.to_string());
            // Longest first, so a secret containing another is masked whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_secret_is_masked_wherever_it_appears() {
        let r = Redactor::default();
        r.add("hunter2");
        assert_eq!(r.redact("password=hunter2; again hunter2"), "password=***; again ***");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
