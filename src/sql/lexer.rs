//! On-demand lexer: tokens are produced one at a time with their byte offset, so parsing a
//! statement never builds a token vector.
//!
//! Comments (*extension*) are blanks between tokens: `--` to the end of the line, and
//! `/* … */`, which nest as in the SQL standard and PostgreSQL (`/* a /* b */ c */` is one
//! comment). Inside a string literal neither starts a comment.

use std::borrow::Cow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok<'a> {
    Word(&'a str),
    Str(Cow<'a, [u8]>),
    Hex(Vec<u8>),
    Int(u64),
    LParen,
    RParen,
    Comma,
    Semi,
    Star,
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Dot,
    End,
}

impl Tok<'_> {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{}'", clip(w)),
            Tok::Str(_) => "a string literal".into(),
            Tok::Hex(_) => "a hex literal".into(),
            Tok::Int(n) => format!("{n}"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Semi => "';'".into(),
            Tok::Star => "'*'".into(),
            Tok::Eq => "'='".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Dot => "'.'".into(),
            Tok::End => "end of statement".into(),
        }
    }
}

fn clip(w: &str) -> &str {
    let mut end = w.len().min(32);
    while !w.is_char_boundary(end) {
        end -= 1;
    }
    &w[..end]
}

/// A lexing failure: byte offset and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub pos: usize,
    pub msg: String,
}

pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// The next token and its starting byte offset.
    pub fn next_tok(&mut self) -> Result<(usize, Tok<'a>), LexError> {
        self.skip_blanks()?;
        let b = self.src.as_bytes();
        let start = self.pos;
        let Some(&c) = b.get(start) else {
            return Ok((start, Tok::End));
        };
        let one = |lx: &mut Self, t| {
            lx.pos += 1;
            Ok((start, t))
        };
        match c {
            b'(' => one(self, Tok::LParen),
            b')' => one(self, Tok::RParen),
            b',' => one(self, Tok::Comma),
            b';' => one(self, Tok::Semi),
            b'*' => one(self, Tok::Star),
            b'=' => one(self, Tok::Eq),
            // `value + n`, `value - n` (a `--` is a comment, skipped above), `excluded.value`.
            b'+' => one(self, Tok::Plus),
            b'-' => one(self, Tok::Minus),
            b'.' => one(self, Tok::Dot),
            b'<' | b'>' => {
                let or_equal = b.get(start + 1) == Some(&b'=');
                self.pos += 1 + or_equal as usize;
                Ok((
                    start,
                    match (c, or_equal) {
                        (b'<', false) => Tok::Lt,
                        (b'<', true) => Tok::Le,
                        (_, false) => Tok::Gt,
                        (_, true) => Tok::Ge,
                    },
                ))
            }
            b'\'' => self.string(start).map(|s| (start, Tok::Str(s))),
            b'x' | b'X' if b.get(start + 1) == Some(&b'\'') => {
                let s = self.string(start + 1)?;
                let hex = decode_hex(&s).ok_or_else(|| LexError {
                    pos: start,
                    msg: "a hex literal needs an even number of hex digits".into(),
                })?;
                Ok((start, Tok::Hex(hex)))
            }
            b'0'..=b'9' => {
                while self.pos < b.len() && b[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = &self.src[start..self.pos];
                let n = digits
                    .parse::<u64>()
                    .map_err(|_| LexError { pos: start, msg: "integer too large".into() })?;
                if self.pos < b.len() && is_word_byte(b[self.pos]) {
                    return Err(LexError { pos: start, msg: "malformed number".into() });
                }
                Ok((start, Tok::Int(n)))
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while self.pos < b.len() && is_word_byte(b[self.pos]) {
                    self.pos += 1;
                }
                Ok((start, Tok::Word(&self.src[start..self.pos])))
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap();
                Err(LexError { pos: start, msg: format!("unexpected character {ch:?}") })
            }
        }
    }

    /// Skip whitespace and comments up to the next token (or the end).
    fn skip_blanks(&mut self) -> Result<(), LexError> {
        let b = self.src.as_bytes();
        loop {
            while self.pos < b.len() && matches!(b[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
                self.pos += 1;
            }
            match (b.get(self.pos), b.get(self.pos + 1)) {
                (Some(b'-'), Some(b'-')) => {
                    self.pos = match b[self.pos..].iter().position(|&c| c == b'\n') {
                        Some(n) => self.pos + n + 1,
                        None => b.len(),
                    };
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.pos;
                    let mut depth = 0usize;
                    let mut i = start;
                    loop {
                        if i + 1 >= b.len() {
                            return Err(LexError {
                                pos: start,
                                msg: "unterminated /* comment: it needs a closing */ (comments nest)".into(),
                            });
                        }
                        match (b[i], b[i + 1]) {
                            (b'/', b'*') => {
                                depth += 1;
                                i += 2;
                            }
                            (b'*', b'/') => {
                                depth -= 1;
                                i += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => i += 1,
                        }
                    }
                    self.pos = i;
                }
                _ => return Ok(()),
            }
        }
    }

    /// A quoted literal whose opening quote is at `quote`; a doubled quote stands for one.
    fn string(&mut self, quote: usize) -> Result<Cow<'a, [u8]>, LexError> {
        let b = self.src.as_bytes();
        let body = quote + 1;
        let mut i = body;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            let Some(rel) = b[i..].iter().position(|&c| c == b'\'') else {
                return Err(LexError { pos: quote, msg: "unterminated string literal".into() });
            };
            let q = i + rel;
            if b.get(q + 1) == Some(&b'\'') {
                let o = owned.get_or_insert_with(Vec::new);
                o.extend_from_slice(&b[i..=q]);
                i = q + 2;
                continue;
            }
            self.pos = q + 1;
            return Ok(match owned {
                None => Cow::Borrowed(&b[body..q]),
                Some(mut o) => {
                    o.extend_from_slice(&b[i..q]);
                    Cow::Owned(o)
                }
            });
        }
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}
