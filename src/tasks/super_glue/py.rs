//! The few Python string semantics the harness's prompt code relies on, ported exactly:
//! `str.isspace` / `str.split()` / `str.strip()`, code-point indexing, the escapes of a
//! `'''…'''` literal read by `ast.literal_eval`, and `lm_eval.utils.general_detokenize`.

use std::sync::LazyLock;

use regex::Regex;

/// Python's `str.isspace` for one character: Unicode White_Space (Rust's
/// `char::is_whitespace`) plus the separators U+001C..U+001F, which Python counts
/// (bidirectional class B/S) and Unicode does not.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()`: runs of whitespace separate, empty pieces dropped.
pub fn split(s: &str) -> Vec<&str> {
    s.split(is_space).filter(|w| !w.is_empty()).collect()
}

/// Python's `s.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Number of code points (Python's `len`).
pub fn len(s: &str) -> usize {
    s.chars().count()
}

/// Python's `s[start:]` for `start` ≥ 0, in code points.
pub fn from_char(s: &str, start: usize) -> &str {
    match s.char_indices().nth(start) {
        Some((b, _)) => &s[b..],
        None => "",
    }
}

/// Python's `s[start:end]` for 0 ≤ start ≤ end ≤ len(s), in code points.
pub fn char_slice(s: &str, start: usize, end: usize) -> &str {
    let tail = from_char(s, start);
    match tail.char_indices().nth(end - start) {
        Some((b, _)) => &tail[..b],
        None => tail,
    }
}

/// `lm_eval.utils.general_detokenize` (0.4.13): undo tokenizer spacing around `n't`,
/// brackets, double quotes and `'` `.` `,`.
pub fn general_detokenize(s: &str) -> String {
    static PUNCT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r" (['.,])").expect("regex"));
    let s = s
        .replace(" n't", "n't")
        .replace(" )", ")")
        .replace("( ", "(")
        .replace("\" ", "\"")
        .replace(" \"", "\"");
    PUNCT.replace_all(&s, "$1").into_owned()
}

/// The value of the Python string literal `'''{body}'''` (what `ast.literal_eval` gives
/// for one element of a list the harness renders from a template): newlines normalised
/// (`\r\n` and `\r` → `\n`, as the Python tokenizer reads source), backslash escapes
/// decoded, unknown escapes kept with their backslash. Errors where Python raises: the
/// literal would end early at an unescaped `'''`, a malformed `\x`/`\u`/`\U`, a `\N{…}`
/// (named characters are not ported), a surrogate, a NUL.
pub fn triple_quoted_literal(body: &str) -> Result<String, String> {
    let src = body.replace("\r\n", "\n").replace('\r', "\n");
    let cs: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '\0' {
            return Err("contains a NUL character (Python cannot parse it)".into());
        }
        if c == '\'' && cs.get(i + 1) == Some(&'\'') && cs.get(i + 2) == Some(&'\'') {
            return Err(
                "contains ''' (it would end the harness's '''-quoted choice literal)".into(),
            );
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = cs.get(i + 1) else {
            return Err("ends in a lone backslash".into());
        };
        i += 2;
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                let mut k = 0;
                while k < 2 {
                    match cs.get(i).and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            i += 1;
                            k += 1;
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).ok_or("bad octal escape")?);
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let digits: String = cs.iter().skip(i).take(n).collect();
                if digits.chars().count() != n || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
                    return Err(format!("truncated \\{e} escape"));
                }
                i += n;
                let v = u32::from_str_radix(&digits, 16).map_err(|e| e.to_string())?;
                out.push(
                    char::from_u32(v)
                        .ok_or_else(|| format!("\\{e}{digits} is not a Unicode scalar value"))?,
                );
            }
            'N' => return Err("\\N{...} escapes are not supported".into()),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_and_slices() {
        assert_eq!(split(" a\u{1c}b\u{a0} c\t"), vec!["a", "b", "c"]);
        assert_eq!(strip("\u{1f} x \n"), "x");
        assert_eq!(char_slice("café au", 2, 4), "fé");
        assert_eq!(char_slice("café", 4, 4), "");
        assert_eq!(from_char("café", 3), "é");
        assert_eq!(from_char("café", 9), "");
    }

    #[test]
    fn literal_escapes() {
        assert_eq!(triple_quoted_literal(r"a\nb").unwrap(), "a\nb");
        assert_eq!(
            triple_quoted_literal(r"it\'s \q \x41\u00e9\101").unwrap(),
            "it's \\q AéA"
        );
        assert_eq!(triple_quoted_literal("a\r\nb\rc").unwrap(), "a\nb\nc");
        assert!(triple_quoted_literal("x'''y").is_err());
        assert!(triple_quoted_literal(r"\x4").is_err());
    }
}
