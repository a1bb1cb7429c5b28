//! Serial canonicalisation: the rule that decides when two spellings name one article.
//!
//! Ministries type serials and model codes on Latin and Cyrillic keyboards, with
//! and without hyphens and spaces. Matching therefore uses a *canonical* form;
//! the raw spelling is kept as evidence. Node and coordinator must apply the
//! same rule, because the canonical forms are part of the signed item leaf.
//!
//! # The canonical-serial rule
//!
//! The same rule applies to serials and to model codes. Its input is a string of
//! Unicode scalar values; its output is a string (possibly empty, which the
//! callers reject). The configurable parts are the fields of [`CanonicalRule`]:
//! `fold_lookalikes` (default `true`) and `remove_chars` (default `"-"`).
//! Steps, in this order:
//!
//! 1. **Normalise** the whole string to Unicode Normalization Form KC (NFKC;
//!    Python `unicodedata.normalize("NFKC", s)`, Java
//!    `Normalizer.normalize(s, Normalizer.Form.NFKC)`). Full-width `ＫＡ０１２`
//!    becomes `KA012`, the ligature `ﬁ` becomes `fi`, no-break spaces become
//!    spaces. Then drop every character that steps 2–4 would remove (one whose
//!    upper-case form, folded, consists only of characters step 4 removes),
//!    and if any was dropped, normalise to NFKC again. Without this, a space
//!    between a letter and its combining mark would decide which letter the
//!    mark joins: `к` + U+0301 composes to `ќ` here and stays Cyrillic,
//!    whereas `к` + space + U+0301 would only meet the mark after `к` had been
//!    folded to `K`, and become `Ḱ`. (Rule revision 2; revision 1 had no such
//!    early removal.)
//! 2. **Upper-case** every character with the full, locale-independent Unicode
//!    mapping (`UnicodeData.txt` plus the unconditional mappings of
//!    `SpecialCasing.txt`): `ß` becomes `SS`, `i` becomes `I` (never the Turkish
//!    dotted `İ`). This is Rust's `str::to_uppercase`, Python's `str.upper()`
//!    and Java's `String.toUpperCase(Locale.ROOT)`.
//! 3. **Fold look-alikes** (only if `fold_lookalikes`): replace each of these
//!    Cyrillic capitals by the Latin capital it looks like (after step 2 only
//!    capitals are left; the lower-case forms fold to the same Latin capital):
//!
//!    | Cyrillic | code point | Latin |  | Cyrillic | code point | Latin |
//!    | --- | --- | --- | --- | --- | --- | --- |
//!    | А а | U+0410 U+0430 | A |  | Р р | U+0420 U+0440 | P |
//!    | В в | U+0412 U+0432 | B |  | С с | U+0421 U+0441 | C |
//!    | Е е | U+0415 U+0435 | E |  | Т т | U+0422 U+0442 | T |
//!    | К к | U+041A U+043A | K |  | Х х | U+0425 U+0445 | X |
//!    | М м | U+041C U+043C | M |  | І і | U+0406 U+0456 | I |
//!    | Н н | U+041D U+043D | H |  | Ј ј | U+0408 U+0458 | J |
//!    | О о | U+041E U+043E | O |  | Ѕ ѕ | U+0405 U+0455 | S |
//!    |  |  |  |  | Ү ү | U+04AE U+04AF | Y |
//!
//!    The first eleven are the Russian capitals that look like Latin ones.
//!    `І` is on the Ukrainian, Belarusian and Kazakh keyboards and `Ү` on the
//!    Kazakh and Kyrgyz ones (member states); `Ј` and `Ѕ` (Serbian, Macedonian) are
//!    folded too because their capitals are indistinguishable from Latin `J`
//!    and `S`. Letters with diacritics (`Ё`, `Ї`, `Й`, …) are *not* folded, nor
//!    are Greek letters. A Cyrillic letter followed by a combining mark that
//!    has no precomposed Cyrillic form (e.g. `А` + U+0301) is folded, and step 5
//!    then composes it with the mark (`Á`).
//! 4. **Remove** every character that is
//!    - whitespace: a character with the Unicode `White_Space` property
//!      (U+0009–U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028,
//!      U+2029, U+202F, U+205F, U+3000), or one of the invisible spaces
//!      U+200B ZERO WIDTH SPACE, U+2060 WORD JOINER, U+FEFF ZERO WIDTH NO-BREAK
//!      SPACE. Removing all of them includes trimming both ends. (Python's
//!      `str.isspace()` and Java's `Character.isWhitespace` use different sets:
//!      use the list above.)
//!    - in `remove_chars` (compared after steps 1–3, so list upper-case forms);
//!    - a hyphen or dash, if `remove_chars` contains `-` (U+002D): U+00AD SOFT
//!      HYPHEN, U+058A ARMENIAN HYPHEN, U+2010 HYPHEN, U+2011 NON-BREAKING
//!      HYPHEN, U+2012 FIGURE DASH, U+2013 EN DASH, U+2014 EM DASH, U+2015
//!      HORIZONTAL BAR, U+2212 MINUS SIGN. (NFKC already turned U+FE63 and
//!      U+FF0D into `-`, U+FE58 and U+FE31 into U+2014, U+FE32 into U+2013 and
//!      super-/subscript minus into U+2212; it leaves the others as they are.)
//! 5. **Normalise** the result to NFKC again. Upper-casing can leave a sequence
//!    that NFKC composes (`ΐ` upper-cases to `Ι` + U+0308 + U+0301, which
//!    NFKC turns into `Ϊ` + U+0301), and removing a hyphen or folding a letter
//!    can put a combining mark next to a new base letter (`A-` + U+0301
//!    becomes `Á`). This step makes the rule idempotent: applying it to its
//!    own output changes nothing.
//!
//! With the default rule, `ка-0 12`, `KA012`, `K A–012` (en dash) and
//! `ＫＡ０１２` all become `KA012`. A result that is empty (the raw value held
//! only spaces and hyphens) is not a valid serial or model.
//!
//! Pure ASCII input needs only steps 2 and 4 (NFKC and folding change no ASCII
//! character), and input made of ASCII and the basic Cyrillic letters
//! U+0400–U+045F needs only steps 2–4 (NFKC changes none of them); this
//! implementation takes these shortcuts, with the same results.
//!
//! Unicode version: this implementation uses the case mapping of the Rust
//! standard library it is built with (Unicode 17 for Rust 1.95) and the
//! normalisation tables of the `unicode-normalization` crate (0.1.26: Unicode
//! 18). NFKC of assigned characters never changes between Unicode versions,
//! and case mappings almost never do (the exception so far is Georgian, in
//! Unicode 11), so implementations on other versions agree on Latin, Cyrillic,
//! digits and punctuation, which is what serials are written in.
//!
//! A custom `remove_chars` must list only characters that steps 1–3 leave
//! alone and that NFKC cannot compose out of others; [`CanonicalRule::check`]
//! tests this, so that the rule stays idempotent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// The configurable parts of the canonical-serial rule (docs/protocol.md §2.3).
///
/// NFKC, trimming, upper-casing and the removal of whitespace always apply;
/// the rest can be switched or extended per deployment. Node and coordinator
/// must use the same rule, because the canonical forms are part of the signed
/// item leaf. The rule itself is described in the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanonicalRule {
    /// Fold Cyrillic letters that look like Latin ones (А→A, В→B, …) to Latin.
    pub fold_lookalikes: bool,
    /// Characters removed besides whitespace (default: the hyphen `-`).
    /// If it contains `-`, the Unicode hyphen and dash variants in
    /// [`HYPHEN_VARIANTS`] are removed too.
    pub remove_chars: String,
}

impl Default for CanonicalRule {
    fn default() -> Self {
        CanonicalRule {
            fold_lookalikes: true,
            remove_chars: "-".to_string(),
        }
    }
}

/// The Cyrillic capitals folded to Latin capitals when
/// [`CanonicalRule::fold_lookalikes`] is set (their lower-case forms reach the
/// same Latin letter through upper-casing).
pub const LOOKALIKES: [(char, char); 15] = [
    ('\u{0410}', 'A'), // А
    ('\u{0412}', 'B'), // В
    ('\u{0415}', 'E'), // Е
    ('\u{041A}', 'K'), // К
    ('\u{041C}', 'M'), // М
    ('\u{041D}', 'H'), // Н
    ('\u{041E}', 'O'), // О
    ('\u{0420}', 'P'), // Р
    ('\u{0421}', 'C'), // С
    ('\u{0422}', 'T'), // Т
    ('\u{0425}', 'X'), // Х
    ('\u{0406}', 'I'), // І (Ukrainian, Belarusian, Kazakh)
    ('\u{0408}', 'J'), // Ј (Serbian, Macedonian)
    ('\u{0405}', 'S'), // Ѕ (Macedonian)
    ('\u{04AE}', 'Y'), // Ү (Kazakh, Kyrgyz)
];

/// Hyphens and dashes removed like `-` when `remove_chars` contains `-`
/// (after NFKC, which maps further variants onto these).
pub const HYPHEN_VARIANTS: [char; 9] = [
    '\u{00AD}', // SOFT HYPHEN
    '\u{058A}', // ARMENIAN HYPHEN
    '\u{2010}', // HYPHEN
    '\u{2011}', // NON-BREAKING HYPHEN
    '\u{2012}', // FIGURE DASH
    '\u{2013}', // EN DASH
    '\u{2014}', // EM DASH
    '\u{2015}', // HORIZONTAL BAR
    '\u{2212}', // MINUS SIGN
];

/// Invisible characters removed like whitespace although they lack the
/// Unicode `White_Space` property.
pub(crate) const INVISIBLE_SPACES: [char; 3] = [
    '\u{200B}', // ZERO WIDTH SPACE
    '\u{2060}', // WORD JOINER
    '\u{FEFF}', // ZERO WIDTH NO-BREAK SPACE (byte order mark)
];

/// Bit set of the ASCII `White_Space` characters: U+0009–U+000D and U+0020.
const ASCII_WHITESPACE: u128 = (0b1_1111 << 0x09) | (1 << 0x20);

/// Step 3 for one character: the Latin capital a Cyrillic look-alike folds to,
/// or the character itself.
pub(crate) fn fold_lookalike(c: char) -> char {
    match c {
        '\u{0410}' | '\u{0430}' => 'A',
        '\u{0412}' | '\u{0432}' => 'B',
        '\u{0415}' | '\u{0435}' => 'E',
        '\u{041A}' | '\u{043A}' => 'K',
        '\u{041C}' | '\u{043C}' => 'M',
        '\u{041D}' | '\u{043D}' => 'H',
        '\u{041E}' | '\u{043E}' => 'O',
        '\u{0420}' | '\u{0440}' => 'P',
        '\u{0421}' | '\u{0441}' => 'C',
        '\u{0422}' | '\u{0442}' => 'T',
        '\u{0425}' | '\u{0445}' => 'X',
        '\u{0406}' | '\u{0456}' => 'I',
        '\u{0408}' | '\u{0458}' => 'J',
        '\u{0405}' | '\u{0455}' => 'S',
        '\u{04AE}' | '\u{04AF}' => 'Y',
        other => other,
    }
}

fn is_ascii_or_basic_cyrillic(c: char) -> bool {
    c.is_ascii() || ('\u{0400}'..='\u{045F}').contains(&c)
}

/// Whether step 4 removes `c` as whitespace (independent of the configuration).
pub fn is_removed_space(c: char) -> bool {
    c.is_whitespace() || INVISIBLE_SPACES.contains(&c)
}

impl CanonicalRule {
    /// Applies the rule to a raw serial or model code.
    pub fn canonicalize(&self, raw: &str) -> String {
        if raw.is_ascii() {
            self.canonicalize_ascii(raw)
        } else if raw.chars().all(is_ascii_or_basic_cyrillic) {
            self.canonicalize_basic_cyrillic(raw)
        } else {
            self.canonicalize_general(raw)
        }
    }

    /// Returns true if and only if `canonical == self.canonicalize(raw)`.
    /// Allocation-free for ASCII input, the common case when the coordinator
    /// checks the canonical forms inside every submitted leaf.
    pub fn is_canonical_form(&self, raw: &str, canonical: &str) -> bool {
        if !raw.is_ascii() {
            return self.canonicalize(raw) == canonical;
        }
        let removed = self.ascii_removed();
        let mut expected = canonical.bytes();
        for b in raw.bytes() {
            let u = b.to_ascii_uppercase();
            if removed & (1 << u) == 0 && expected.next() != Some(u) {
                return false;
            }
        }
        expected.next().is_none()
    }

    /// Checks that `remove_chars` keeps the rule idempotent: every listed
    /// character must be left alone by NFKC, upper-casing and (if enabled)
    /// look-alike folding, must not be composable by NFKC from other
    /// characters, and must not be a combining mark.
    pub fn check(&self) -> Result<(), RuleError> {
        for c in self.remove_chars.chars() {
            let mut buf = [0u8; 4];
            let s: &str = c.encode_utf8(&mut buf);
            let mut decomposed = Vec::new();
            unicode_normalization::char::decompose_canonical(c, |d| decomposed.push(d));
            let stable = s.nfkc().eq(std::iter::once(c))
                && c.to_uppercase().eq(std::iter::once(c))
                && (!self.fold_lookalikes || fold_lookalike(c) == c)
                && decomposed == [c]
                && unicode_normalization::char::canonical_combining_class(c) == 0
                && !unicode_normalization::char::is_combining_mark(c);
            if !stable {
                return Err(RuleError::UnstableRemoveChar(c));
            }
        }
        Ok(())
    }

    /// The ASCII characters removed by step 4, as a bit set.
    fn ascii_removed(&self) -> u128 {
        let mut removed = ASCII_WHITESPACE;
        for b in self.remove_chars.bytes() {
            // Bytes below 0x80 are exactly the ASCII characters of the string.
            if b < 0x80 {
                removed |= 1 << b;
            }
        }
        removed
    }

    /// The rule for pure ASCII input: NFKC and folding change nothing, so
    /// upper-case and remove in one pass.
    fn canonicalize_ascii(&self, raw: &str) -> String {
        let removed = self.ascii_removed();
        let mut out = String::with_capacity(raw.len());
        for b in raw.bytes() {
            let u = b.to_ascii_uppercase();
            if u < 0x80 && removed & (1 << u) == 0 {
                out.push(char::from(u));
            }
        }
        out
    }

    /// The rule for input made of ASCII and the basic Cyrillic letters
    /// U+0400–U+045F (Russian, Ukrainian, Belarusian, Serbian, Macedonian).
    /// These are all in NFKC and compose with nothing, none of them is a
    /// space or a dash, and each has a one-to-one upper-case mapping: so
    /// steps 1 and 5 change nothing, and the rest is one pass.
    fn canonicalize_basic_cyrillic(&self, raw: &str) -> String {
        let removed = self.ascii_removed();
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            let upper = match u32::from(c) {
                0x61..=0x7A => c.to_ascii_uppercase(),
                code @ 0x430..=0x44F => char::from_u32(code - 0x20).unwrap_or(c),
                code @ 0x450..=0x45F => char::from_u32(code - 0x50).unwrap_or(c),
                _ => c,
            };
            let folded = if self.fold_lookalikes {
                fold_lookalike(upper)
            } else {
                upper
            };
            let keep = if folded.is_ascii() {
                removed & (1 << u32::from(folded)) == 0
            } else {
                !self.remove_chars.contains(folded)
            };
            if keep {
                out.push(folded);
            }
        }
        out
    }

    /// The rule for any input, step by step as documented, without the ASCII
    /// and basic-Cyrillic shortcuts that [`CanonicalRule::canonicalize`]
    /// takes. Public so that the fuzz targets and property tests can check
    /// that the shortcuts agree with it.
    pub fn canonicalize_general(&self, raw: &str) -> String {
        let hyphens = self.remove_chars.contains('-');
        let removes = |c: char| {
            is_removed_space(c)
                || (hyphens && HYPHEN_VARIANTS.contains(&c))
                || self.remove_chars.contains(c)
        };
        let fold = |c: char| {
            if self.fold_lookalikes {
                fold_lookalike(c)
            } else {
                c
            }
        };
        // Step 1: NFKC (skipped when the input is already known to be in
        // NFKC), then drop the characters that steps 2-4 would drop anyway
        // and compose again, so that a space or hyphen between a letter and
        // its combining mark does not decide which letter the mark joins.
        let normalised: Cow<'_, str> = if is_nfkc_quick(raw.chars()) == IsNormalized::Yes {
            raw.into()
        } else {
            raw.nfkc().collect::<String>().into()
        };
        let ignorable = |c: char| c.to_uppercase().all(|u| removes(fold(u)));
        let step_1: Cow<'_, str> = if normalised.chars().any(ignorable) {
            let kept: String = normalised.chars().filter(|&c| !ignorable(c)).collect();
            if is_nfkc_quick(kept.chars()) == IsNormalized::Yes {
                kept.into()
            } else {
                kept.nfkc().collect::<String>().into()
            }
        } else {
            normalised
        };
        // Steps 2-4, one character at a time. The removal here only matters
        // when upper-casing turns one character into several of which some
        // are removable (`ŉ` into `ʼN` with `N` in `remove_chars`).
        let mut out = String::with_capacity(step_1.len());
        for c in step_1.chars() {
            out.extend(c.to_uppercase().map(fold).filter(|&u| !removes(u)));
        }
        // Step 5.
        if is_nfkc_quick(out.chars()) == IsNormalized::Yes {
            out
        } else {
            out.nfkc().collect()
        }
    }
}

/// Why a [`CanonicalRule`] configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "remove_chars contains {0:?} (U+{code:04X}), which normalisation, upper-casing or look-alike folding would change, or which can combine with other characters; list only plain characters in their upper-case form",
        code = u32::from(*.0)
    )]
    UnstableRemoveChar(char),
}

/// Why a raw code has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("is empty once spaces and hyphens are removed")]
    Empty,
}

macro_rules! canonical_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Canonicalises `raw` under `rule`; fails if nothing is left.
            pub fn from_raw(raw: &str, rule: &CanonicalRule) -> Result<$name, CanonicalError> {
                let canonical = rule.canonicalize(raw);
                if canonical.is_empty() {
                    Err(CanonicalError::Empty)
                } else {
                    Ok($name(canonical))
                }
            }

            /// Wraps a string that is already canonical (e.g. read back from a
            /// verified leaf). Returns `None` if `rule` would change it.
            pub fn from_canonical(s: &str, rule: &CanonicalRule) -> Option<$name> {
                (!s.is_empty() && rule.canonicalize(s) == s).then(|| $name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a string known to be canonical under the rule in force
            /// (it was checked when its snapshot was accepted).
            pub(crate) fn from_trusted(s: &str) -> $name {
                $name(s.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

canonical_string!(
    /// A serial number in canonical form.
    CanonicalSerial
);
canonical_string!(
    /// A model code (`9K38`, `AK-74M` → `AK74M`) in canonical form.
    CanonicalModel
);

/// What identifies an article across states: canonical model plus canonical serial.
///
/// Ordered by model, then serial, each compared as UTF-8 bytes: the order of
/// items inside a snapshot (docs/protocol.md).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    pub model: CanonicalModel,
    pub serial: CanonicalSerial,
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.model, self.serial)
    }
}

impl fmt::Debug for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemKey({}/{})", self.model, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(s: &str) -> String {
        CanonicalRule::default().canonicalize(s)
    }

    #[test]
    fn design_example_gives_one_key() {
        // Cyrillic к, а; a hyphen and a space.
        assert_eq!(canon("\u{043A}\u{0430}-0 12"), "KA012");
        assert_eq!(canon("KA012"), "KA012");
        assert_eq!(canon("AK-74M"), "AK74M");
    }

    #[test]
    fn every_lookalike_folds_in_both_cases() {
        let rule = CanonicalRule::default();
        for (cyrillic, latin) in LOOKALIKES {
            let lower: String = cyrillic.to_lowercase().collect();
            assert_ne!(lower, cyrillic.to_string());
            for spelling in [cyrillic.to_string(), lower] {
                let raw = format!("1{spelling}2");
                assert_eq!(rule.canonicalize(&raw), format!("1{latin}2"), "{raw:?}");
            }
        }
    }

    #[test]
    fn fold_table_and_function_agree_on_every_char() {
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let expected = LOOKALIKES
                .iter()
                .find(|(cyr, _)| *cyr == c || cyr.to_lowercase().eq(std::iter::once(c)))
                .map_or(c, |(_, latin)| *latin);
            assert_eq!(fold_lookalike(c), expected, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn folding_can_be_switched_off() {
        let rule = CanonicalRule {
            fold_lookalikes: false,
            ..CanonicalRule::default()
        };
        // Cyrillic к, а are upper-cased but stay Cyrillic.
        assert_eq!(
            rule.canonicalize("\u{043A}\u{0430}-012"),
            "\u{041A}\u{0410}012"
        );
        assert_ne!(rule.canonicalize("\u{041A}\u{0410}012"), "KA012");
    }

    #[test]
    fn other_cyrillic_letters_are_not_folded() {
        // Я, Ё, У stay (upper-cased) Cyrillic.
        assert_eq!(
            canon("\u{044F}\u{0451}\u{0443}"),
            "\u{042F}\u{0401}\u{0423}"
        );
    }

    #[test]
    fn whitespace_of_every_kind_is_removed() {
        for space in [
            " ", "\t", "\n", "\r\n", "\u{000B}", "\u{000C}", "\u{0085}", "\u{00A0}", "\u{1680}",
            "\u{2000}", "\u{2007}", "\u{200A}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}",
            "\u{3000}", "\u{200B}", "\u{2060}", "\u{FEFF}",
        ] {
            assert_eq!(
                canon(&format!("{space}KA{space}0{space}12{space}")),
                "KA012",
                "{space:?}"
            );
        }
    }

    #[test]
    fn trims_both_ends() {
        assert_eq!(canon("  9M39  "), "9M39");
        assert_eq!(canon("\t9M39\r\n"), "9M39");
        assert_eq!(canon("\u{3000}9M39\u{00A0}"), "9M39");
    }

    #[test]
    fn hyphens_and_dashes_are_removed() {
        for dash in [
            "-", "\u{00AD}", "\u{058A}", "\u{2010}", "\u{2011}", "\u{2012}", "\u{2013}",
            "\u{2014}", "\u{2015}", "\u{2212}", "\u{FE58}", "\u{FE63}", "\u{FF0D}", "\u{207B}",
            "\u{208B}", "\u{FE31}", "\u{FE32}",
        ] {
            assert_eq!(canon(&format!("KA{dash}012")), "KA012", "{dash:?}");
        }
    }

    #[test]
    fn dashes_stay_when_hyphen_is_not_removed() {
        let rule = CanonicalRule {
            remove_chars: String::new(),
            ..CanonicalRule::default()
        };
        assert_eq!(rule.canonicalize("KA-0 12"), "KA-012");
        assert_eq!(rule.canonicalize("KA\u{2013}012"), "KA\u{2013}012");
        let slash = CanonicalRule {
            remove_chars: "/".to_string(),
            ..CanonicalRule::default()
        };
        assert_eq!(slash.canonicalize("KA/01-2"), "KA01-2");
        assert_eq!(slash.canonicalize("КА/01-2"), "KA01-2");
    }

    #[test]
    fn nfkc_folds_full_width_and_compatibility_forms() {
        assert_eq!(canon("\u{FF2B}\u{FF21}\u{FF10}\u{FF11}\u{FF12}"), "KA012"); // ＫＡ０１２
        assert_eq!(
            canon("\u{FF4B}\u{FF41}\u{FF0D}\u{FF10}\u{FF11}\u{FF12}"),
            "KA012"
        ); // ｋａ－０１２
        assert_eq!(canon("\u{2460}2"), "12"); // circled digit one
        assert_eq!(canon("\u{FB01}x"), "FIX"); // ligature fi
        assert_eq!(canon("9\u{2126}"), "9\u{03A9}"); // ohm sign to omega
    }

    #[test]
    fn upper_cases_with_the_full_mapping() {
        assert_eq!(canon("ak-74m"), "AK74M");
        assert_eq!(canon("stra\u{00DF}e"), "STRASSE");
        assert_eq!(canon("\u{00E9}"), "\u{00C9}");
        assert_eq!(canon("i"), "I");
    }

    #[test]
    fn combining_marks_are_composed_after_removal() {
        // A hyphen between a letter and a combining acute: the acute joins the letter.
        assert_eq!(canon("A-\u{0301}"), "\u{00C1}");
        // Cyrillic А with a combining acute folds to Latin Á.
        assert_eq!(canon("\u{0410}\u{0301}"), "\u{00C1}");
        // Greek ΐ upper-cases to a sequence that needs composing again.
        let once = canon("\u{0390}");
        assert_eq!(canon(&once), once);
    }

    #[test]
    fn empty_after_removal() {
        assert_eq!(canon(""), "");
        assert_eq!(canon(" - \u{2013}\u{00A0}"), "");
        assert!(CanonicalSerial::from_raw(" -- ", &CanonicalRule::default()).is_err());
    }

    #[test]
    fn from_canonical_accepts_canonical_and_rejects_others() {
        let rule = CanonicalRule::default();
        assert_eq!(
            CanonicalSerial::from_canonical("KA012", &rule).map(|s| s.as_str().to_string()),
            Some("KA012".to_string())
        );
        assert!(CanonicalModel::from_canonical("9\u{00C1}", &rule).is_some());
        for bad in [
            "",
            "ka012",
            "KA-012",
            "KA 012",
            " KA012",
            "\u{041A}A012",
            "\u{FF2B}A012",
            "A\u{0301}",
        ] {
            assert!(
                CanonicalSerial::from_canonical(bad, &rule).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn check_accepts_plain_and_rejects_unstable_remove_chars() {
        assert_eq!(CanonicalRule::default().check(), Ok(()));
        let with = |s: &str| CanonicalRule {
            remove_chars: s.to_string(),
            ..CanonicalRule::default()
        };
        assert_eq!(with("-/._#").check(), Ok(()));
        for bad in [
            "a", "\u{00C1}", "\u{0301}", "\u{FF0D}", "\u{0421}", "\u{00DF}",
        ] {
            assert!(with(bad).check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_single_char_is_idempotent_and_fast_path_agrees() {
        let rule = CanonicalRule::default();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let s = c.to_string();
            let once = rule.canonicalize(&s);
            assert_eq!(rule.canonicalize(&once), once, "U+{:04X}", u32::from(c));
            if c.is_ascii() {
                assert_eq!(rule.canonicalize_ascii(&s), rule.canonicalize_general(&s));
            }
            if is_ascii_or_basic_cyrillic(c) {
                assert_eq!(
                    rule.canonicalize_basic_cyrillic(&s),
                    rule.canonicalize_general(&s)
                );
            }
        }
    }

    /// Strings biased towards the interesting parts: ASCII, Cyrillic,
    /// spaces, dashes, combining marks, and anything else.
    fn mixed_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[A-Za-z0-9]{1,3}",
            "[\u{0400}-\u{04FF}]{1,2}",
            "[ \t\u{00A0}\u{3000}\u{200B}-]",
            "[\u{2010}-\u{2015}\u{2212}\u{00AD}\u{FF0D}]",
            "[\u{0300}-\u{036F}]",
            "[\u{FF01}-\u{FF5E}]",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    /// Replaces every Latin letter that has a Cyrillic look-alike by that
    /// look-alike, in upper or lower case as chosen by `lower`.
    fn cyrillicise(s: &str, lower: &[bool]) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                match LOOKALIKES
                    .iter()
                    .find(|(_, latin)| *latin == c.to_ascii_uppercase())
                {
                    Some((cyr, _)) if lower.get(i).copied().unwrap_or(false) => {
                        cyr.to_lowercase().next().unwrap_or(*cyr)
                    }
                    Some((cyr, _)) => *cyr,
                    None => c,
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn is_canonical_form_agrees_with_canonicalize(raw in "[ a-zA-Z0-9кА\\-\\t]{0,12}", other in "[A-Z0-9]{0,6}") {
            let rule = CanonicalRule::default();
            let canonical = rule.canonicalize(&raw);
            prop_assert!(rule.is_canonical_form(&raw, &canonical));
            prop_assert_eq!(rule.is_canonical_form(&raw, &other), other == canonical);
        }

        #[test]
        fn idempotent_on_arbitrary_strings(s in any::<String>()) {
            let once = canon(&s);
            prop_assert_eq!(canon(&once), once);
        }

        #[test]
        fn idempotent_on_mixed_strings(s in mixed_string()) {
            let once = canon(&s);
            prop_assert_eq!(canon(&once), once);
        }

        #[test]
        fn idempotent_with_other_rules(s in mixed_string(), fold in any::<bool>(), rm in "[-/._#A-Z]{0,3}") {
            let rule = CanonicalRule { fold_lookalikes: fold, remove_chars: rm };
            prop_assert_eq!(rule.check(), Ok(()));
            let once = rule.canonicalize(&s);
            prop_assert_eq!(rule.canonicalize(&once), once);
        }

        #[test]
        fn case_spaces_and_hyphens_do_not_matter(
            s in "[A-Z0-9]{1,12}",
            lower in prop::collection::vec(any::<bool>(), 12),
            seps in prop::collection::vec(prop::sample::select(vec!["", "", " ", "-", "\t", "\u{00A0}", "\u{2013}", " - "]), 13),
        ) {
            let mut spelled = String::from(seps[0]);
            for (i, c) in s.chars().enumerate() {
                spelled.push(if lower[i] { c.to_ascii_lowercase() } else { c });
                spelled.push_str(seps[i + 1]);
            }
            prop_assert_eq!(canon(&spelled), canon(&s));
            prop_assert_eq!(canon(&s), s);
        }

        #[test]
        fn cyrillic_lookalikes_do_not_matter(
            s in "[ABCEHIJKMOPSTXY0-9]{1,12}",
            lower in prop::collection::vec(any::<bool>(), 12),
        ) {
            let spelled = cyrillicise(&s, &lower);
            prop_assert_eq!(canon(&spelled), canon(&s));
        }

        #[test]
        fn cyrillic_fast_path_agrees_with_general_path(
            s in "[\\x00-\\x7F\u{0400}-\u{045F}]{0,24}",
            rm in "[-/A-Z\u{0400}-\u{045F}]{0,3}",
            fold in any::<bool>(),
        ) {
            let rule = CanonicalRule { fold_lookalikes: fold, remove_chars: rm };
            prop_assert_eq!(rule.canonicalize_basic_cyrillic(&s), rule.canonicalize_general(&s));
        }

        #[test]
        fn fast_path_agrees_with_general_path(s in "[\\x00-\\x7F]{0,24}", rm in "[\\x00-\\x7F]{0,3}", fold in any::<bool>()) {
            let rule = CanonicalRule { fold_lookalikes: fold, remove_chars: rm };
            prop_assert_eq!(rule.canonicalize_ascii(&s), rule.canonicalize_general(&s));
        }
    }
}
