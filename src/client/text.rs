//! Text from the network made safe to show: always one line, with control
//! characters, line separators and format characters (bidi controls among them)
//! escaped visibly, so no message or name can pass for several lines or another sender.

use std::fmt::Write;

/// Unicode's format characters (general category Cf, Unicode 15.1), with the
/// line and paragraph separators U+2028 and U+2029 (which join the bidi
/// embeddings and overrides U+202A-U+202E in one range): characters a terminal
/// shows as nothing, or that reorder or break the text around them.
const FORMAT: [(char, char); 20] = [
    ('\u{00ad}', '\u{00ad}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{06dd}', '\u{06dd}'),
    ('\u{070f}', '\u{070f}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08e2}', '\u{08e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e007f}'),
];

/// Whether `c` must not reach a terminal as itself: a control character (C0,
/// DEL and C1: escape sequences, newlines, NEL) or one of [`FORMAT`].
fn hidden(c: char) -> bool {
    c.is_control() || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// `text` as one line a terminal shows as it is: newline, carriage return and
/// tab become `\n`, `\r` and `\t`, every other hidden character `\u{hex}`
/// (an escape is `\u{1b}`, a right-to-left override `\u{202e}`).
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_left_alone() {
        for text in [
            "hello",
            "naïve café ☕",
            "שלום",
            "日本語",
            "a\\nb",
            "  spaced  ",
        ] {
            assert_eq!(one_line(text), text);
        }
    }

    #[test]
    fn line_breaks_and_controls_are_escaped() {
        assert_eq!(
            one_line("hello\n[lobby] admin: click http://evil"),
            "hello\\n[lobby] admin: click http://evil"
        );
        assert_eq!(one_line("a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(one_line("\x1b[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(one_line("\0\x07\x7f"), "\\u{0}\\u{7}\\u{7f}");
        // C1 controls, NEL among them, and the Unicode line and paragraph separators.
        assert_eq!(one_line("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
        assert_eq!(one_line("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }

    #[test]
    fn bidi_and_other_format_characters_are_escaped() {
        let bidi = [
            0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f,
            0x061c,
        ];
        for code in bidi {
            let c = char::from_u32(code).unwrap();
            assert_eq!(one_line(&format!("x{c}y")), format!("x\\u{{{code:x}}}y"));
        }
        // Zero-width characters, the byte-order mark, a soft hyphen, tag characters.
        for code in [0x200b, 0x200d, 0x2060, 0xfeff, 0xad, 0xe0041] {
            let c = char::from_u32(code).unwrap();
            assert_eq!(one_line(&c.to_string()), format!("\\u{{{code:x}}}"));
        }
        // The classic: a name that reads as "exe.txt" but ends in ".exe".
        assert_eq!(one_line("txt\u{202e}exe.doc"), "txt\\u{202e}exe.doc");
    }

    #[test]
    fn the_result_is_always_one_line() {
        let all: String = (0..0x3000u32).filter_map(char::from_u32).collect();
        let shown = one_line(&all);
        assert_eq!(shown.lines().count(), 1);
        assert!(!shown.chars().any(hidden));
    }
}
