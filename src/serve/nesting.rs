//! How deep a TOML text nests, read before the parser sees it: basic_toml recurses once per
//! level and has no limit of its own, so a projects file nested 50,000 deep would overflow
//! the stack and abort the process instead of being refused.

/// The deepest a projects file may nest: arrays, inline tables, and the parts of a dotted
/// key on one line. A projects file needs two.
pub const MAX_DEPTH: usize = 32;

/// The first line of `text` that nests deeper than [`MAX_DEPTH`], if one does. Strings and
/// comments are skipped: a bracket or a dot in them is text.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut dots, mut line) = (0usize, 0usize, 1usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                dots = 0;
            }
            b'#' => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                let (end, lines) = string_end(bytes, i, quote);
                i = end;
                line += lines;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'.' => dots += 1,
            _ => {}
        }
        if depth + dots > MAX_DEPTH {
            return Some(line);
        }
        i += 1;
    }
    None
}

/// Where the string that opens at `start` with `quote` ends (just past it), and how many
/// lines it spans: one quote or three (a multi-line string); in a basic string (`"`) a
/// backslash escapes what follows. A one-line string left open ends at its line's end, where
/// the parser will say what is wrong.
fn string_end(bytes: &[u8], start: usize, quote: u8) -> (usize, usize) {
    let delimiter = [quote; 3];
    let triple = bytes[start..].starts_with(&delimiter);
    let mut i = start + if triple { 3 } else { 1 };
    let mut lines = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => {
                if bytes.get(i + 1) == Some(&b'\n') {
                    lines += 1;
                }
                i += 1;
            }
            b'\n' if !triple => return (i, lines),
            b'\n' => lines += 1,
            q if q == quote && !triple => return (i + 1, lines),
            q if q == quote && bytes[i..].starts_with(&delimiter) => return (i + 3, lines),
            _ => {}
        }
        i += 1;
    }
    (i, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_file_is_shallow_and_deep_nesting_is_found_by_line() {
        let file = "endpoint = \"https://x\" # [[[[\n[[project]]\nname = \"a.b.c\"\n\
                    carryforward = [\"unit\", \"e2e\"]\nworkflows = ['[[[', \"\\\"[[[\"]\n\
                    service_name = \"\"\"\n[[[[\n\"\"\"\n";
        assert_eq!(too_deep(file), None);
        let deep = |open: &str, close: &str| {
            format!(
                "a = 1\nb = 2\nx = {}{}\n",
                open.repeat(50_000),
                close.repeat(50_000)
            )
        };
        assert_eq!(too_deep(&deep("[", "]")), Some(3));
        assert_eq!(too_deep(&deep("{a = ", "}")), Some(3));
        let dotted = format!("[project]\n{}y = 1\n", "x.".repeat(50_000));
        assert_eq!(too_deep(&dotted), Some(2));
        let at_the_limit = format!("x = {}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(too_deep(&at_the_limit), None);
        let past_it = format!("x = {}", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(&past_it), Some(1));
    }
}
