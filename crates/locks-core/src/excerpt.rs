//! User input as an error message shows it: whole when short, cut short
//! with its length when long, so a 1 MB name from a caller does not come
//! back as a 1 MB message.

use std::fmt;

/// Input longer than this many bytes is cut.
const LIMIT: usize = 80;
/// How many bytes of a cut input are shown (at most; cut on a character boundary).
const HEAD: usize = 64;

/// A piece of caller input in a message.
///
/// ```
/// use locks_core::Excerpt;
/// assert_eq!(Excerpt::quoted("volume-1").to_string(), "\"volume-1\"");
/// let long = "x".repeat(1000);
/// let shown = Excerpt::ticked(&long).to_string();
/// assert_eq!(shown, format!("`{}`… (1000 bytes)", "x".repeat(64)));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a> {
    text: &'a str,
    ticked: bool,
}

impl<'a> Excerpt<'a> {
    /// `text` in double quotes, escaped as Rust's `{:?}` does.
    pub fn quoted(text: &'a str) -> Excerpt<'a> {
        Excerpt {
            text,
            ticked: false,
        }
    }

    /// `text` in backticks, as it is.
    pub fn ticked(text: &'a str) -> Excerpt<'a> {
        Excerpt { text, ticked: true }
    }

    /// The part shown, and whether it was cut.
    fn head(&self) -> (&'a str, bool) {
        if self.text.len() <= LIMIT {
            return (self.text, false);
        }
        let mut end = HEAD;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        (&self.text[..end], true)
    }
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = self.head();
        if self.ticked {
            write!(f, "`{head}`")?;
        } else {
            write!(f, "{head:?}")?;
        }
        if cut {
            write!(f, "… ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_shown_whole() {
        let text = "a".repeat(LIMIT);
        assert_eq!(Excerpt::ticked(&text).to_string(), format!("`{text}`"));
    }

    #[test]
    fn long_input_is_cut_on_a_character_boundary_with_its_length() {
        // 'é' is two bytes: byte 64 falls inside one.
        let text = format!("{}{}", "a", "é".repeat(100));
        let shown = Excerpt::quoted(&text).to_string();
        assert_eq!(shown, format!("\"a{}\"… (201 bytes)", "é".repeat(31)));
    }
}
