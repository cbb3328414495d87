//! The one task-id scheme, for `/predict` responses and stored jobs alike:
//! `YYYYMMDD_hhmmss_` (the reference server's timestamp prefix) + [`RANDOM_CHARS`] random base-36
//! characters (36^25 > 2^129). A job's id is the capability to read it and its results, so it
//! must not be guessable; sorting ids sorts them by creation time (`GET /tasks` paging).

use chrono::{DateTime, Utc};

/// Random base-36 characters after the timestamp prefix (≥ 128 random bits).
pub const RANDOM_CHARS: usize = 25;

pub fn new(now: DateTime<Utc>) -> String {
    format!("{}_{}", now.format("%Y%m%d_%H%M%S"), random_token(RANDOM_CHARS))
}

/// Ids come from URLs: only the generated shape is accepted, so no id can address other keys.
pub fn is_valid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 16 + RANDOM_CHARS
        && b[8] == b'_'
        && b[15] == b'_'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[16..].iter().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

/// The creation time an id starts with (whole seconds), if it has the generated shape.
pub fn created_at(id: &str) -> Option<DateTime<Utc>> {
    let stamp = id.get(..15).filter(|_| is_valid(id))?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok().map(|t| t.and_utc())
}

/// `len` uniformly random base-36 characters: bytes ≥ 252 (= 7 × 36) are rejected, so no modulo
/// bias. The OS (WASI random in a component) is the source.
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8; // 252
    let mut token = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while token.len() < len {
        getrandom::fill(&mut bytes).expect("the platform has a random source");
        for b in bytes.iter().filter(|b| **b < LIMIT).take(len - token.len()) {
            token.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_have_the_reference_shape_and_are_validated() {
        let now = DateTime::parse_from_rfc3339("2024-03-20T09:53:03Z").unwrap().to_utc();
        let id = new(now);
        assert!(id.starts_with("20240320_095303_"), "{id}");
        assert_eq!(id.len(), 41, "{id}");
        assert!(is_valid(&id));
        assert_ne!(id, new(now));
        assert_eq!(created_at(&id), Some(now));
        assert_eq!(created_at("../../etc"), None);
        assert!(is_valid("20240320_095303_0123456789abcdefghijklmno"));
        for bad in [
            "",
            "../../etc",
            "20240320_095303_12345",
            "20240320_095303_0123456789abcdefghijklmn",
            "20240320_095303_0123456789abcdefghijklmnop",
            "20240320_095303_0123456789ABCDEFGHIJKLMNO",
            "20240320_095303_0123456789abcdefghijk/mno",
            "2024032x_095303_0123456789abcdefghijklmno",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn random_tokens_use_the_whole_alphabet_evenly() {
        let token = random_token(36 * 200);
        assert_eq!(token.len(), 36 * 200);
        for c in "0123456789abcdefghijklmnopqrstuvwxyz".chars() {
            let n = token.chars().filter(|&t| t == c).count();
            assert!((120..=280).contains(&n), "{c}: {n} of 7200");
        }
        assert_eq!(random_token(0), "");
    }
}
