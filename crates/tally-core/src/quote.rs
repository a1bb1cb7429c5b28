//! Quoting untrusted input in error messages.
//!
//! Requests and exports can carry values of megabytes; a message that
//! repeated one whole would be unreadable, and as a gRPC status it would
//! not fit in the response headers at all.

/// At most this many characters of a raw value are quoted in a message.
pub(crate) const EXCERPT_CHARS: usize = 80;

/// A raw value for a message, cut to [`EXCERPT_CHARS`] characters (marked
/// with `…`).
pub fn excerpt(raw: &str) -> String {
    match raw.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(excerpt("KAZ"), "KAZ");
        let exact = "ж".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "ж".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&long), format!("{exact}…"));
    }
}
