//! Masks secret values in everything the engine shows or stores.
//!
//! A value added in this process is masked wherever it appears. So that masking
//! survives a resume in another process, the run stores, for each secret, a
//! keyed fingerprint (HMAC-SHA256 under a random per-run key) and its length,
//! never the value: a resumed process masks every word-delimited stretch of
//! text of that length whose fingerprint matches.

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

pub const MASK: &str = "***";

/// Shared by every step of a run; a value added once is masked everywhere after.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default, Debug)]
struct Inner {
    /// Values known in this process, longest first.
    secrets: Vec<String>,
    /// The run's fingerprint key (hex), once one secret was added or imported.
    key: Option<String>,
    /// (length in bytes, HMAC of the value), for values known only by fingerprint.
    fingerprints: Vec<(usize, [u8; 32])>,
    /// Fingerprints not yet handed to the store.
    dirty: bool,
}

/// What the run stores so that a later process masks the same values.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    fingerprints: Vec<(usize, String)>,
}

fn hmac(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(value);
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A character that can be part of a secret word (a token, a password).
fn wordish(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(c, '"' | '\'' | '=' | ':' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '`'))
}

impl Redactor {
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.secrets.iter().any(|s| s == value) {
            inner.secrets.push(value.to_string());
            // Longest first, so a secret containing another is masked whole.
            inner.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            let key =
                inner.key.get_or_insert_with(|| hex(&std::array::from_fn::<u8, 32, _>(|_| fastrand::u8(..)))).clone();
            let print = (value.len(), hmac(key.as_bytes(), value.as_bytes()));
            if !inner.fingerprints.contains(&print) {
                inner.fingerprints.push(print);
                inner.dirty = true;
            }
        }
    }

    /// The fingerprints to store with the run, when new ones were added since
    /// the last call.
    pub fn take_new_fingerprints(&self) -> Option<String> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        let stored = Stored {
            key: inner.key.clone().unwrap_or_default(),
            fingerprints: inner.fingerprints.iter().map(|(len, h)| (*len, hex(h))).collect(),
        };
        Some(serde_json::to_string(&stored).expect("fingerprints serialize"))
    }

    /// A redactor that masks what an earlier process of the run masked.
    pub fn with_fingerprints(stored: Option<&str>) -> Self {
        let redactor = Self::default();
        if let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(s).ok()) {
            let mut inner = redactor.inner.write().unwrap_or_else(|e| e.into_inner());
            inner.fingerprints =
                stored.fingerprints.iter().filter_map(|(len, h)| Some((*len, unhex(h)?.try_into().ok()?))).collect();
            inner.key = Some(stored.key);
        }
        redactor
    }

    pub fn redact(&self, text: &str) -> String {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in inner.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        match &inner.key {
            Some(key) if !inner.fingerprints.is_empty() => {
                mask_fingerprinted(&out, key.as_bytes(), &inner.fingerprints)
            }
            _ => out,
        }
    }
}

/// Masks each stretch of `text` that starts and ends at a word boundary and
/// whose length and keyed hash match a fingerprint.
fn mask_fingerprinted(text: &str, key: &[u8], prints: &[(usize, [u8; 32])]) -> String {
    let starts: Vec<usize> = text
        .char_indices()
        .filter(|&(i, c)| wordish(c) && text[..i].chars().next_back().is_none_or(|p| !wordish(p)))
        .map(|(i, _)| i)
        .collect();
    let ends_word = |end: usize| {
        text.is_char_boundary(end)
            && text[..end].chars().next_back().is_some_and(wordish)
            && text[end..].chars().next().is_none_or(|n| !wordish(n))
    };
    let mut hits: Vec<(usize, usize)> = Vec::new();
    for &start in &starts {
        if hits.last().is_some_and(|&(_, end)| start < end) {
            continue;
        }
        // Longest first, as for known values.
        let mut found = None;
        for &(len, print) in prints {
            let end = start + len;
            if end <= text.len()
                && ends_word(end)
                && found.is_none_or(|(_, e)| end > e)
                && hmac(key, &text.as_bytes()[start..end]) == print
            {
                found = Some((start, end));
            }
        }
        hits.extend(found);
    }
    if hits.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in hits {
        out.push_str(&text[at..start]);
        out.push_str(MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    out
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

    #[test]
    fn another_process_masks_by_fingerprint_without_knowing_the_value() {
        let first = Redactor::default();
        first.add("s3cr3t-Token_9");
        let stored = first.take_new_fingerprints().expect("new fingerprints");
        assert!(!stored.contains("s3cr3t"), "the value itself is never stored: {stored}");
        assert!(first.take_new_fingerprints().is_none(), "handed over once");

        let resumed = Redactor::with_fingerprints(Some(&stored));
        assert_eq!(resumed.redact("token=s3cr3t-Token_9 done"), "token=*** done");
        assert_eq!(resumed.redact("\"s3cr3t-Token_9\""), "\"***\"");
        assert_eq!(resumed.redact("xs3cr3t-Token_9 is another word"), "xs3cr3t-Token_9 is another word");
        assert_eq!(resumed.redact("no secret here"), "no secret here");
    }

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        let key = [0x0bu8; 20];
        assert_eq!(hex(&hmac(&key, b"Hi There")), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }
}
