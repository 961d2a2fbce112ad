//! `SCAN MATCH` patterns as Redis's `stringmatchlen` reads them: `*`, `?`,
//! `[abc]`, `[^a]`, `[a-z]` (bounds compared as signed C chars) and backslash
//! escapes. The pattern is walked once into tokens (the walk never depends on
//! the subject), then matched iteratively so no pattern can exhaust the stack.

/// One pattern element; every element except `Star` consumes exactly one byte.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class { negate: bool, items: Vec<Item> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Byte(u8),
    /// Inclusive range of signed chars, already ordered.
    Range(i8, i8),
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(super) struct Glob {
    tokens: Vec<Token>,
}

/// `char` on the platforms Redis runs on is signed.
fn signed(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

impl Glob {
    pub(super) fn new(pattern: &[u8]) -> Glob {
        // Bytes past the end read as the C string's terminating NUL.
        let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
        let n = pattern.len();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < n {
            match at(i) {
                b'*' => {
                    while at(i + 1) == b'*' && i + 1 < n {
                        i += 1;
                    }
                    tokens.push(Token::Star);
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    i += 1;
                    let negate = at(i) == b'^' && i < n;
                    if negate {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    loop {
                        let left = n.saturating_sub(i);
                        if at(i) == b'\\' && left >= 2 {
                            i += 1;
                            items.push(Item::Byte(at(i)));
                        } else if at(i) == b']' && left > 0 {
                            break;
                        } else if left == 0 {
                            i -= 1;
                            break;
                        } else if left >= 3 && at(i + 1) == b'-' {
                            let (a, b) = (signed(at(i)), signed(at(i + 2)));
                            items.push(Item::Range(a.min(b), a.max(b)));
                            i += 2;
                        } else {
                            items.push(Item::Byte(at(i)));
                        }
                        i += 1;
                    }
                    tokens.push(Token::Class { negate, items });
                }
                b'\\' if n - i >= 2 => {
                    i += 1;
                    tokens.push(Token::Byte(at(i)));
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        Glob { tokens }
    }

    /// True when `s` matches, exactly as `stringmatchlen(pattern, s, nocase=0)`.
    pub(super) fn matches(&self, s: &[u8]) -> bool {
        if s.is_empty() {
            // Redis's loop never runs on an empty subject: only "" matches it.
            return self.tokens.is_empty();
        }
        let (mut t, mut i) = (0usize, 0usize);
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            if let Some(Token::Star) = self.tokens.get(t) {
                backtrack = Some((t, i));
                t += 1;
                continue;
            }
            let Some(&c) = s.get(i) else { break };
            if self.tokens.get(t).is_some_and(|tok| one(tok, c)) {
                t += 1;
                i += 1;
                continue;
            }
            match backtrack {
                Some((star, from)) => {
                    t = star + 1;
                    i = from + 1;
                    backtrack = Some((star, from + 1));
                }
                None => return false,
            }
        }
        self.tokens
            .get(t..)
            .is_some_and(|rest| rest.iter().all(|tok| *tok == Token::Star))
    }
}

fn one(tok: &Token, c: u8) -> bool {
    match tok {
        Token::Star => false,
        Token::Any => true,
        Token::Byte(b) => *b == c,
        Token::Class { negate, items } => {
            let hit = items.iter().any(|item| match *item {
                Item::Byte(b) => b == c,
                Item::Range(lo, hi) => (lo..=hi).contains(&signed(c)),
            });
            hit != *negate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn globs_match_like_stringmatchlen() {
        assert!(m("*", "abc"));
        assert!(!m("*", ""));
        assert!(m("", ""));
        assert!(m("a*", "a"));
        assert!(m("h?llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hbllo"));
        assert!(m("sess:\\*", "sess:*"));
        assert!(!m("sess:\\*", "sess:x"));
        assert!(m("*a*b*c", "xxaxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxbxx"));
        assert!(!m("a[", "ab"));
        assert!(m("a[^", "ab"));
        assert!(m("a\\", "a\\"));
        assert!(m("[\\]]", "]"));
        // The class swallows the rest of an unterminated pattern: [\]-a] or x.
        assert!(m("[a-]x", "]"));
        assert!(m("[a-]x", "x"));
        assert!(!m("[a-]x", "]x"));
        assert!(m("*?", "a"));
        assert!(!m("?*?", "a"));
    }

    #[test]
    fn deep_patterns_do_not_recurse() {
        let p = "*a".repeat(50_000);
        let s = "a".repeat(49_999);
        assert!(!m(&p, &s));
        assert!(m(&p, &"a".repeat(50_000)));
    }
}
