//! LIKE patterns: `%` matches any run of bytes, `_` exactly one byte, `\` makes the next byte
//! literal. A pattern is compiled once into its literal prefix (which bounds the range scan, so
//! that keys outside the prefix are never visited) and a matcher for the rest.

use crate::limits::LIKE_PATTERN_BYTES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Byte(u8),
    One,
    Run,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LikePattern {
    elems: Vec<Elem>,
    prefix: Vec<u8>,
    /// The pattern is all literal bytes plus one trailing `%`: the prefix range alone decides.
    prefix_only: bool,
}

impl LikePattern {
    /// Compile a pattern; the error says why it is not one.
    pub fn compile(pattern: &[u8]) -> Result<LikePattern, &'static str> {
        if pattern.len() > LIKE_PATTERN_BYTES_MAX {
            return Err("LIKE pattern is longer than 1024 bytes");
        }
        let mut elems = Vec::with_capacity(pattern.len());
        let mut it = pattern.iter();
        while let Some(&c) = it.next() {
            elems.push(match c {
                b'%' => {
                    if elems.last() == Some(&Elem::Run) {
                        continue;
                    }
                    Elem::Run
                }
                b'_' => Elem::One,
                b'\\' => match it.next() {
                    Some(&e) => Elem::Byte(e),
                    None => return Err("LIKE pattern ends with a lone escape '\\'"),
                },
                c => Elem::Byte(c),
            });
        }
        let prefix: Vec<u8> =
            elems.iter().map_while(|e| if let Elem::Byte(b) = e { Some(*b) } else { None }).collect();
        let prefix_only = elems.len() == prefix.len() + 1 && elems.last() == Some(&Elem::Run);
        Ok(LikePattern { elems, prefix, prefix_only })
    }

    /// A pattern that compiles to this one (what a node sends another with a read).
    pub fn source(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.elems.len());
        for e in &self.elems {
            match e {
                Elem::Byte(b @ (b'%' | b'_' | b'\\')) => out.extend_from_slice(&[b'\\', *b]),
                Elem::Byte(b) => out.push(*b),
                Elem::One => out.push(b'_'),
                Elem::Run => out.push(b'%'),
            }
        }
        out
    }

    /// The literal bytes every matching key starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// True when the pattern has no wildcard: it matches exactly its prefix.
    pub fn is_exact(&self) -> bool {
        self.elems.len() == self.prefix.len()
    }

    /// Whether `key` matches. Greedy matching that backtracks only to the last `%`: linear in
    /// practice, O(key × pattern) at worst, and both are bounded (keys by KEY_BYTES_MAX,
    /// patterns by LIKE_PATTERN_BYTES_MAX).
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix_only {
            return key.starts_with(&self.prefix);
        }
        let p = &self.elems;
        let (mut ki, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ki < key.len() {
            match p.get(pi) {
                Some(Elem::Run) => {
                    star = Some((pi, ki));
                    pi += 1;
                }
                Some(Elem::One) => {
                    ki += 1;
                    pi += 1;
                }
                Some(Elem::Byte(b)) if *b == key[ki] => {
                    ki += 1;
                    pi += 1;
                }
                _ => match star {
                    Some((sp, sk)) => {
                        pi = sp + 1;
                        ki = sk + 1;
                        star = Some((sp, sk + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|e| *e == Elem::Run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        LikePattern::compile(p.as_bytes()).unwrap().matches(k.as_bytes())
    }

    #[test]
    fn wildcards_and_escapes() {
        assert!(m("user:%", "user:1"));
        assert!(m("user:%", "user:"));
        assert!(!m("user:%", "use"));
        assert!(m("u_er%", "user:9"));
        assert!(!m("u_er", "uer"));
        assert!(m("%:1", "user:1"));
        assert!(m("%a%b%c", "xxaxxbxxc"));
        assert!(!m("%a%b%c", "xxaxxcxxb"));
        assert!(m("100\\%", "100%"));
        assert!(!m("100\\%", "1000"));
        assert!(m("a\\_b", "a_b"));
        assert!(!m("a\\_b", "axb"));
        assert!(m("a\\\\b", "a\\b"));
        assert!(m("%", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a%%%b", "ab"));
    }

    #[test]
    fn prefix_stops_at_the_first_wildcard() {
        let p = LikePattern::compile(b"us\\%er_x%").unwrap();
        assert_eq!(p.prefix(), b"us%er");
        assert!(!p.is_exact());
        assert!(LikePattern::compile(b"exact").unwrap().is_exact());
        assert!(LikePattern::compile(b"bad\\").is_err());
    }

    #[test]
    fn a_pattern_compiles_again_from_its_source() {
        for p in [&b"user:%"[..], b"a_b%c", b"100\\%", b"x\\_y\\\\z", b"%%a", b""] {
            let c = LikePattern::compile(p).unwrap();
            assert_eq!(LikePattern::compile(&c.source()).unwrap(), c, "{:?}", String::from_utf8_lossy(p));
        }
    }
}
