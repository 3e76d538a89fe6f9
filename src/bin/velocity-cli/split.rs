//! Where statements end: at a `;` outside string literals and comments, by the same rules as
//! the server's lexer (`'…'` with `''` for a quote, `X'…'`, `--` to the end of the line, and
//! `/* … */`, which nest). Fed line by line, so a dump streams through without being held whole.
//! A statement is sent from its first token on: comments inside and after it go with it (the
//! server skips them), comments before it are dropped.

/// What the text fed so far is in the middle of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Code,
    /// Inside a quoted literal (`'…'` or `X'…'`).
    Quote,
    /// After `--`, until the end of the line.
    LineComment,
    /// Inside `/* … */`, this many deep.
    Block(u32),
}

/// One statement, without its `;`, and the line of the input its first token is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub line: usize,
}

#[derive(Debug)]
pub struct Splitter {
    cur: String,
    state: State,
    /// `cur` holds a token (not only blanks and comments).
    content: bool,
    /// The line the next character is on.
    line: usize,
    /// The line of `cur`'s first token.
    start: usize,
}

/// The server lexer's blanks (anything else is a token, or an error the server reports).
fn blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter { cur: String::new(), state: State::Code, content: false, line: 1, start: 1 }
    }
}

impl Splitter {
    /// A splitter that starts inside `state` (the completer's view of one line).
    pub fn starting_in(state: State) -> Self {
        Splitter { state, content: state == State::Quote, ..Splitter::default() }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A statement has begun and not ended: a token, an open literal or an open comment.
    pub fn continuing(&self) -> bool {
        self.content || !matches!(self.state, State::Code | State::LineComment)
    }

    /// The line of the input that the next text fed is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Count a line of the input that is not fed (a meta-command).
    pub fn skip_line(&mut self) {
        self.line += 1;
    }

    /// The text of the statement begun so far.
    pub fn pending(&self) -> &str {
        self.cur.trim_matches(blank)
    }

    /// Forget the statement begun so far (the input's line count goes on).
    pub fn reset(&mut self) {
        self.cur.clear();
        self.content = false;
        self.state = State::Code;
    }

    /// Take `text` (whole lines, or the whole input) and return the statements it completes.
    pub fn feed(&mut self, text: &str) -> Vec<Statement> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let next = chars.peek().copied();
            match self.state {
                State::Code => match (c, next) {
                    (';', _) => {
                        self.cut(&mut out);
                        continue;
                    }
                    ('\'', _) => {
                        self.mark();
                        self.state = State::Quote;
                    }
                    ('-', Some('-')) => {
                        chars.next();
                        self.cur.push_str("--");
                        self.state = State::LineComment;
                        continue;
                    }
                    ('/', Some('*')) => {
                        chars.next();
                        self.cur.push_str("/*");
                        self.state = State::Block(1);
                        continue;
                    }
                    (c, _) if blank(c) => {}
                    _ => self.mark(),
                },
                // A doubled quote closes and reopens: the same bytes either way.
                State::Quote if c == '\'' => self.state = State::Code,
                State::Quote => {}
                State::LineComment if c == '\n' => self.state = State::Code,
                State::LineComment => {}
                State::Block(depth) => match (c, next) {
                    ('*', Some('/')) => {
                        chars.next();
                        self.cur.push_str("*/");
                        self.state = if depth == 1 { State::Code } else { State::Block(depth - 1) };
                        continue;
                    }
                    ('/', Some('*')) => {
                        chars.next();
                        self.cur.push_str("/*");
                        self.state = State::Block(depth + 1);
                        continue;
                    }
                    _ => {}
                },
            }
            if c == '\n' {
                self.line += 1;
            }
            self.cur.push(c);
        }
        out
    }

    /// The statement begun and not ended by a `;`, if any (the end of the input, or `\g`).
    pub fn finish(&mut self) -> Option<Statement> {
        let mut out = Vec::new();
        self.cut(&mut out);
        self.state = State::Code;
        out.pop()
    }

    /// A token: the statement starts here (blanks and comments before it are not sent).
    fn mark(&mut self) {
        if !self.content {
            self.cur.clear();
            self.content = true;
            self.start = self.line;
        }
    }

    fn cut(&mut self, out: &mut Vec<Statement>) {
        if self.content {
            out.push(Statement { text: self.cur.trim_matches(blank).to_owned(), line: self.start });
        }
        self.cur.clear();
        self.content = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(String, usize)> {
        let mut s = Splitter::default();
        let mut out: Vec<Statement> = s.feed(text);
        out.extend(s.finish());
        out.into_iter().map(|s| (s.text, s.line)).collect()
    }

    fn texts(text: &str) -> Vec<String> {
        split(text).into_iter().map(|s| s.0).collect()
    }

    #[test]
    fn semicolons_in_literals_and_comments_do_not_split() {
        assert_eq!(texts("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(texts("INSERT 'a;b'; SELECT 'it''s;'"), ["INSERT 'a;b'", "SELECT 'it''s;'"]);
        assert_eq!(texts("SELECT X'3b'; -- trailing; comment\nSELECT 2;"), ["SELECT X'3b'", "SELECT 2"]);
        assert_eq!(
            texts("SELECT /* ; */ 1; SELECT /* a /* ; */ ; */ 2"),
            ["SELECT /* ; */ 1", "SELECT /* a /* ; */ ; */ 2"]
        );
        // A comment marker inside a literal is text, a quote inside a comment is not a literal.
        assert_eq!(texts("SELECT '--'; SELECT '/*'; SELECT 3"), ["SELECT '--'", "SELECT '/*'", "SELECT 3"]);
        assert_eq!(texts("-- it's\nSELECT 1; /* it's */ SELECT 2 -- it's"), ["SELECT 1", "SELECT 2 -- it's"]);
        // Only blanks and comments between semicolons: nothing to send.
        assert_eq!(texts(" ;; -- x\n /* y */ ; \n"), Vec::<String>::new());
        // A lone dash or slash is an ordinary character.
        assert_eq!(texts("a - b / c; d"), ["a - b / c", "d"]);
    }

    #[test]
    fn lines_of_statements_and_open_states() {
        assert_eq!(
            split("\n-- header\n\nSELECT 1\n  FROM kv;\n\nSELECT 2;"),
            [("SELECT 1\n  FROM kv".to_owned(), 4), ("SELECT 2".to_owned(), 7)]
        );
        let mut s = Splitter::default();
        assert!(s.feed("SELECT 'a\n").is_empty());
        assert_eq!(s.state(), State::Quote);
        assert!(s.continuing());
        assert_eq!(s.feed("b';\n"), [Statement { text: "SELECT 'a\nb'".into(), line: 1 }]);
        assert!(!s.continuing());
        s.feed("/* open\n");
        assert_eq!((s.state(), s.continuing()), (State::Block(1), true));
        s.feed("/* deeper */ still\n");
        assert_eq!(s.state(), State::Block(1));
        s.feed("*/\n");
        assert!(!s.continuing(), "a closed comment alone is no statement");
        s.feed("-- only a comment\n");
        assert!(!s.continuing());
        s.feed("SELECT\n");
        assert!(s.continuing());
        assert_eq!(s.pending(), "SELECT");
        s.reset();
        assert!(!s.continuing());
        assert_eq!(s.finish(), None);
        // An unterminated literal at the end is still sent: the server says what is wrong.
        assert_eq!(texts("SELECT 'open"), ["SELECT 'open"]);
        assert_eq!(
            Splitter::starting_in(State::Quote).feed("x'; y;"),
            [Statement { text: "x'".into(), line: 1 }, Statement { text: "y".into(), line: 1 }]
        );
    }

    /// The splitter and the server's lexer agree on where literals and comments are: each piece
    /// the splitter cuts parses exactly when the same statement alone does.
    #[test]
    fn pieces_parse_as_the_server_reads_them() {
        let pieces = [
            "SELECT value FROM kv WHERE key = 'a;b' -- ; here\n",
            "INSERT INTO kv (key, value) VALUES ('x', '/* ; */') /* ; */",
            "DELETE FROM kv WHERE key IN ('--', ';', 'it''s') /* a /* nested ; */ comment */",
        ];
        let script = pieces.join(";\n");
        let got = texts(&script);
        assert_eq!(got.len(), pieces.len(), "{got:?}");
        for g in &got {
            velocity::sql::parse(g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
        }
    }
}
