//! Parsing of identifiers and slugs that come from requests.
//!
//! Every workspace id is parsed into a [`Uuid`] before anything builds a path from it: the only
//! way from request text to a folder is `Uuid` -> its canonical hyphenated form.

use uuid::Uuid;

use crate::error::{Error, Result};

/// Longest id text we even look at; a UUID in any accepted form is at most 45 characters.
const MAX_ID_LEN: usize = 64;

/// Parses a UUID from request text. Accepts the hyphenated form (any case) and the simple
/// 32-hex-digit form; rejects everything else (`..`, slashes, NUL, braces, URNs, long input).
pub fn parse_uuid(text: &str, what: &str) -> Result<Uuid> {
    if text.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!("{what} id is too long")));
    }
    let ok_shape = (text.len() == 36 || text.len() == 32)
        && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !ok_shape {
        return Err(Error::invalid(format!("{what} id must be a UUID")));
    }
    Uuid::try_parse(text).map_err(|_| Error::invalid(format!("{what} id must be a UUID")))
}

/// A new time-ordered id (UUID v7).
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub const MAX_SLUG_LEN: usize = 63;
pub const MAX_NAME_LEN: usize = 200;

/// Whether `text` has the shape of an id: it parses as a UUID in a form [`parse_uuid`] accepts
/// (hyphenated in any case, or 32 hex digits), or in any other form `uuid` reads (braced, URN).
/// Such text is never a slug, so a lookup by "id or slug" can never be taken over by a slug.
pub fn looks_like_id(text: &str) -> bool {
    parse_uuid(text, "x").is_ok() || Uuid::try_parse(text).is_ok()
}

/// Prefix [`slugify`] puts before a name whose slug would look like an id.
const ID_SHAPED_SLUG_PREFIX: &str = "slug-";

/// Checks a slug: 1 to 63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`,
/// and not shaped like an id (see [`looks_like_id`]).
pub fn validate_slug(slug: &str) -> Result<()> {
    let valid = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !valid {
        return Err(Error::invalid(
            "slug must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ));
    }
    if looks_like_id(slug) {
        return Err(Error::invalid(
            "slug must not look like an id (a UUID, with or without hyphens): ids and slugs name \
             the same things; choose a slug with a letter after 'f' or a different length",
        ));
    }
    Ok(())
}

/// Derives a slug from a display name: lowercase ASCII letters and digits, runs of anything
/// else folded into one `-`. A result shaped like an id (a name that is a UUID) gets the prefix
/// `slug-`, so a derived slug is always valid.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= MAX_SLUG_LEN {
            break;
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "untitled".to_string()
    } else if looks_like_id(trimmed) {
        format!("{ID_SHAPED_SLUG_PREFIX}{trimmed}")
    } else {
        trimmed.to_string()
    }
}

/// Checks a display name: 1 to 200 characters after trimming, no control characters.
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid("name must be 1 to 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name must not contain control characters"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_traversal_and_junk() {
        for bad in [
            "..",
            "../etc",
            "%2e%2e",
            "/etc/passwd",
            "a\0b",
            "",
            "{0191b1c8-0000-7000-8000-000000000000}",
            "urn:uuid:0191b1c8-0000-7000-8000-000000000000",
            &"0".repeat(1000),
        ] {
            assert!(parse_uuid(bad, "workspace").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn accepts_both_uuid_forms_and_canonicalises() {
        let id = new_id();
        let upper = id.hyphenated().to_string().to_uppercase();
        assert_eq!(parse_uuid(&upper, "x").ok(), Some(id));
        assert_eq!(parse_uuid(&id.simple().to_string(), "x").ok(), Some(id));
    }

    #[test]
    fn slugify_examples() {
        assert_eq!(slugify("Acme Corp."), "acme-corp");
        assert_eq!(slugify("  --Hello__World--  "), "hello-world");
        assert_eq!(slugify("日本"), "untitled");
    }

    #[test]
    fn id_shaped_slugs_are_refused_and_never_derived() {
        let id = new_id();
        let forms = [
            id.hyphenated().to_string(),
            id.simple().to_string(),
            id.hyphenated().to_string().to_uppercase(),
            id.simple().to_string().to_uppercase(),
            id.braced().to_string(),
            id.urn().to_string(),
        ];
        for form in &forms {
            assert!(looks_like_id(form), "{form}");
            let err = validate_slug(form).expect_err(form);
            assert!(matches!(err, Error::Invalid(_)), "{form}: {err:?}");
            // A name that is an id gives a slug that is not one.
            let derived = slugify(form);
            assert!(validate_slug(&derived).is_ok(), "{form} -> {derived}");
            assert!(!looks_like_id(&derived), "{form} -> {derived}");
        }
        assert_eq!(
            slugify(&id.hyphenated().to_string()),
            format!("slug-{}", id.hyphenated())
        );
        // Near misses stay valid slugs.
        let near = format!("{}0", id.simple());
        assert!(validate_slug(&near).is_ok());
        assert!(validate_slug("deadbeef").is_ok());
    }

    proptest! {
        /// No text is both an id and a valid slug, whatever it is.
        #[test]
        fn nothing_is_both_an_id_and_a_slug(s in "[0-9a-fA-F-]{30,38}|\\PC{0,64}") {
            prop_assert!(!(parse_uuid(&s, "x").is_ok() && validate_slug(&s).is_ok()));
        }

        /// Every UUID, in every form, is refused as a slug.
        #[test]
        fn no_uuid_form_is_a_slug(bytes in proptest::array::uniform16(any::<u8>())) {
            let id = Uuid::from_bytes(bytes);
            for form in [id.hyphenated().to_string(), id.simple().to_string()] {
                prop_assert!(validate_slug(&form).is_err());
                prop_assert!(validate_slug(&slugify(&form)).is_ok());
            }
        }

        #[test]
        fn parsed_ids_only_ever_yield_canonical_path_segments(s in "\\PC{0,80}") {
            if let Ok(id) = parse_uuid(&s, "x") {
                let seg = id.hyphenated().to_string();
                prop_assert_eq!(seg.len(), 36);
                prop_assert!(seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
            }
        }

        #[test]
        fn slugify_always_yields_a_valid_slug(s in "\\PC{0,200}") {
            prop_assert!(validate_slug(&slugify(&s)).is_ok());
        }
    }
}
