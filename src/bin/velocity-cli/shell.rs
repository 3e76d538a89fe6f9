//! The session: lines in (from the terminal, a file, a pipe or `-c`), statements and
//! meta-commands run, results and errors out. The interactive shell and the script runner
//! share it; they differ in what an error stops.

use crate::help;
use crate::print::{self, safe_text, text_width};
use crate::split::{Splitter, State, Statement};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Instant;
use velocity::client::{Client, ClientError};
use velocity::protocol::{ErrorCode, ResultSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expanded {
    Off,
    On,
    /// When the table would be wider than the terminal or would cut a value.
    Auto,
}

/// What to do after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// `\q`.
    Quit,
    /// A failure that ends the run: the connection is gone, or a script's first error.
    Stop,
}

/// A failure, once reported: whether the session can go on.
struct Failure {
    fatal: bool,
}

/// An error as the user is told it: a name (the wire code's, or what went wrong on this
/// side), the wire code when there is one, and the message.
pub struct Problem {
    pub kind: String,
    pub code: Option<u16>,
    pub message: String,
}

impl Problem {
    pub fn usage(message: impl Into<String>) -> Problem {
        Problem { kind: "USAGE".into(), code: None, message: message.into() }
    }

    pub fn of(e: &ClientError) -> Problem {
        let (kind, code, message) = match e {
            ClientError::Server(w) => (w.code.name().to_owned(), Some(w.code as u16), w.message.clone()),
            ClientError::Auth { status, message } => (
                ErrorCode::from_u16(*status).map_or("LOGIN_FAILED", |c| c.name()).to_owned(),
                Some(*status),
                format!("login failed: {message}"),
            ),
            ClientError::Disconnected { code, reason } => {
                ("DISCONNECTED".into(), Some(*code), format!("server disconnected: {reason}"))
            }
            ClientError::Io(_) => ("IO_ERROR".into(), None, e.to_string()),
            ClientError::Protocol(_) => ("BAD_REPLY".into(), None, e.to_string()),
            ClientError::Usage(_) => ("USAGE".into(), None, e.to_string()),
            ClientError::Trust(_) => ("UNTRUSTED_SERVER".into(), None, e.to_string()),
            ClientError::OutcomeUnknown(m) => {
                ("OUTCOME_UNKNOWN".into(), Some(ErrorCode::OutcomeUnknown as u16), m.clone())
            }
        };
        Problem { kind, code, message }
    }

    /// With what was being done when it happened (`cannot connect to …: `).
    pub fn context(mut self, what: &str) -> Problem {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// One JSON object (a line on stderr in --json mode).
    pub fn json(&self, file: Option<&str>, line: Option<usize>) -> String {
        let mut o = serde_json::Map::new();
        o.insert("error".into(), self.kind.clone().into());
        if let Some(c) = self.code {
            o.insert("code".into(), c.into());
        }
        o.insert("message".into(), self.message.clone().into());
        if let Some(f) = file {
            o.insert("file".into(), f.into());
        }
        if let Some(l) = line {
            o.insert("line".into(), l.into());
        }
        print::json_line(&serde_json::Value::Object(o))
    }
}

/// Whether the connection can be used after `e`: not after the server left or broke the
/// framing (the next reply could not be matched to its request).
fn fatal(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(_) | ClientError::Disconnected { .. } | ClientError::Protocol(_))
}

/// Under a parse error's "at byte N:", the statement's line with a caret at N, as psql shows
/// it. Long lines are cut around the spot.
fn caret(stmt: &str, message: &str) -> Option<String> {
    let n: usize = message.strip_prefix("at byte ")?.split(':').next()?.parse().ok()?;
    if n > stmt.len() || !stmt.is_char_boundary(n) {
        return None;
    }
    let line_start = stmt[..n].rfind('\n').map_or(0, |i| i + 1);
    let line_end = stmt[n..].find('\n').map_or(stmt.len(), |i| n + i);
    let line_no = stmt[..line_start].matches('\n').count() + 1;
    let show = |s: &str| -> String {
        safe_text(&s.chars().map(|c| if c == '\t' || c == '\r' { ' ' } else { c }).collect::<String>())
    };
    let mut before = show(&stmt[line_start..n]);
    let mut after = show(&stmt[n..line_end]);
    const BEFORE: usize = 60;
    const AFTER: usize = 40;
    if before.chars().count() > BEFORE {
        let skip = before.chars().count() - BEFORE;
        before = format!("…{}", before.chars().skip(skip).collect::<String>());
    }
    if after.chars().count() > AFTER {
        after = format!("{}…", after.chars().take(AFTER).collect::<String>());
    }
    let head = format!("LINE {line_no}: ");
    Some(format!("{head}{before}{after}\n{}^", " ".repeat(text_width(&head) + text_width(&before))))
}

/// Shortcut words that stand for a statement, as before meta-commands had a backslash.
fn expand(stmt: &str) -> Option<&'static str> {
    match stmt.trim() {
        "stats" => Some("SHOW STATS"),
        "status" => Some("SHOW STATUS"),
        _ => None,
    }
}

/// What a line holds: a meta-command (a line starting with `\` outside a literal or comment)
/// or SQL statements it completes.
pub enum Item {
    Meta { text: String, line: usize },
    Sql(Statement),
}

pub struct Shell {
    pub client: Client,
    pub split: Splitter,
    pub format: Format,
    pub expanded: Expanded,
    pub timing: bool,
    /// Scripts stop at their first failure (unless --continue-on-error); the terminal does not.
    pub stop_on_error: bool,
    /// What the input is called in error messages (a file name, `<stdin>`), if anything.
    pub source: Option<String>,
    /// The text of `\conninfo`.
    pub conninfo: String,
    failures: usize,
    ran: usize,
    last: Option<Statement>,
}

impl Shell {
    pub fn new(client: Client, format: Format, conninfo: String) -> Shell {
        Shell {
            client,
            split: Splitter::default(),
            format,
            expanded: Expanded::Off,
            timing: false,
            stop_on_error: true,
            source: None,
            conninfo,
            failures: 0,
            ran: 0,
            last: None,
        }
    }

    /// Report a problem on stderr: a JSON object in --json mode, else `ERROR: …` (after
    /// `file:line: ` for a script), with the caret under a parse error's position.
    pub fn report(&self, p: &Problem, at: Option<&Statement>) {
        let mut err = std::io::stderr().lock();
        if self.format == Format::Json {
            let _ = writeln!(err, "{}", p.json(self.source.as_deref(), at.map(|s| s.line)));
            return;
        }
        let place = match (&self.source, at) {
            (Some(src), Some(s)) => format!("{}:{}: ", safe_text(src), s.line),
            _ => String::new(),
        };
        let code = if p.code.is_some() && ErrorCode::ALL.iter().any(|c| c.name() == p.kind) {
            format!("{}: ", p.kind)
        } else {
            String::new()
        };
        let _ = writeln!(err, "{place}ERROR: {code}{}", safe_text(&p.message));
        if p.kind == ErrorCode::InvalidCommand.name() {
            if let Some(c) = at.and_then(|s| caret(&s.text, &p.message)) {
                let _ = writeln!(err, "{c}");
            }
        }
    }

    /// The prompt for the next line: psql's marks for an open literal or comment.
    pub fn prompt(&self) -> &'static str {
        match self.split.state() {
            _ if !self.split.continuing() => "velocity> ",
            State::Quote => "     '... ",
            State::Block(_) => "     *... ",
            _ => "      ... ",
        }
    }

    /// Split one line of input into what it holds; nothing runs yet. A meta-command ends at
    /// the end of its line or at a `;`, after which SQL (or another meta-command) may follow.
    pub fn take(&mut self, line: &str) -> Vec<Item> {
        let t = line.trim_start();
        if self.split.state() == State::Code && t.starts_with('\\') {
            let (meta, rest) = match t.find(';') {
                Some(i) => (&t[..i], &t[i + 1..]),
                None => (t, ""),
            };
            let mut items = vec![Item::Meta { text: meta.trim().to_owned(), line: self.split.line() }];
            if rest.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
                self.split.skip_line();
            } else {
                items.extend(self.take(rest));
            }
            return items;
        }
        let mut items: Vec<Item> = self.split.feed(line).into_iter().map(Item::Sql).collect();
        if !line.ends_with('\n') {
            items.extend(self.split.feed("\n").into_iter().map(Item::Sql));
        }
        // A meta-command after the last ';' of the line (`SELECT …; \x`).
        if self.split.state() == State::Code && self.split.pending().starts_with('\\') {
            let text = self.split.pending().to_owned();
            items.push(Item::Meta { text, line: self.split.line() - 1 });
            self.split.reset();
        }
        items
    }

    /// Run what `take` found, in order.
    pub fn run(&mut self, items: Vec<Item>) -> Flow {
        for item in items {
            let r = match item {
                Item::Meta { text, line } => self.meta(&text, line),
                Item::Sql(s) => self.statement(&s),
            };
            match r {
                Ok(Flow::Go) => {}
                Ok(flow) => return flow,
                Err(f) => {
                    self.failures += 1;
                    if f.fatal || self.stop_on_error {
                        return Flow::Stop;
                    }
                }
            }
        }
        Flow::Go
    }

    /// One line: take it and run it.
    pub fn line(&mut self, line: &str) -> Flow {
        let items = self.take(line);
        self.run(items)
    }

    /// Run a whole input (a file, a pipe, `-c`): at its end, a statement without its `;`
    /// runs too.
    pub fn script(&mut self, input: &mut dyn BufRead) -> ExitCode {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.report(&Problem::usage(format!("cannot read the input: {e}")), None);
                    return ExitCode::FAILURE;
                }
            }
            let Ok(line) = std::str::from_utf8(&buf) else {
                let at = Statement { text: String::new(), line: self.split.line() };
                self.report(&Problem::usage("this line is not UTF-8; statements are UTF-8 text"), Some(&at));
                return ExitCode::FAILURE;
            };
            match self.line(line) {
                Flow::Go => {}
                Flow::Quit => return self.exit_code(),
                Flow::Stop => return ExitCode::FAILURE,
            }
        }
        if let Some(s) = self.split.finish() {
            if self.run(vec![Item::Sql(s)]) == Flow::Stop {
                return ExitCode::FAILURE;
            }
        }
        self.exit_code()
    }

    /// Success when nothing failed; after --continue-on-error, how many did.
    fn exit_code(&self) -> ExitCode {
        if self.failures == 0 {
            return ExitCode::SUCCESS;
        }
        if self.format != Format::Json && !self.stop_on_error {
            warn!("velocity-cli: {} of {} statements failed", self.failures, self.ran);
        }
        ExitCode::FAILURE
    }

    fn say(&self, text: &str) -> Result<Flow, Failure> {
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(Flow::Go),
            Err(e) => Err(self.output_failed(e)),
        }
    }

    fn output_failed(&self, e: std::io::Error) -> Failure {
        self.report(&Problem::usage(format!("cannot write the output: {e}")), None);
        Failure { fatal: true }
    }

    /// A meta-command's own failure (a bad argument): reported, the session goes on.
    fn refuse(&self, message: String, line: usize) -> Result<Flow, Failure> {
        self.report(&Problem::usage(message), Some(&Statement { text: String::new(), line }));
        Err(Failure { fatal: false })
    }

    fn on_off(&self, cmd: &str, arg: &str, now: bool, line: usize) -> Result<bool, Failure> {
        match arg.to_ascii_lowercase().as_str() {
            "" => Ok(!now),
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => {
                let _ =
                    self.refuse(format!("{cmd}: unrecognized value \"{}\": on or off", safe_text(arg)), line);
                Err(Failure { fatal: false })
            }
        }
    }

    fn meta(&mut self, text: &str, line: usize) -> Result<Flow, Failure> {
        self.ran += 1;
        let text = text.trim().trim_end_matches(';').trim_end();
        let (cmd, arg) = match text.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (text, ""),
        };
        match cmd {
            "\\?" => self.say(&help::meta_list()),
            "\\h" | "\\help" => match help::statement_help(arg) {
                Ok(h) => self.say(&h),
                Err(m) => self.refuse(m, line),
            },
            "\\q" => Ok(Flow::Quit),
            "\\g" => {
                self.ran -= 1;
                match self.split.finish().or_else(|| self.last.clone()) {
                    Some(s) => self.statement(&s),
                    None => self.refuse("\\g: no statement typed yet".into(), line),
                }
            }
            "\\p" => {
                let p = self.split.pending();
                if p.is_empty() {
                    self.say("Query buffer is empty.\n")
                } else {
                    self.say(&format!("{p}\n"))
                }
            }
            "\\r" => {
                self.split.reset();
                self.say("Query buffer reset (cleared).\n")
            }
            "\\x" => {
                self.expanded = match arg.to_ascii_lowercase().as_str() {
                    "" if self.expanded == Expanded::Off => Expanded::On,
                    "" => Expanded::Off,
                    "auto" => Expanded::Auto,
                    _ => match self.on_off("\\x", arg, false, line)? {
                        true => Expanded::On,
                        false => Expanded::Off,
                    },
                };
                self.say(match self.expanded {
                    Expanded::On => "Expanded display is on.\n",
                    Expanded::Off => "Expanded display is off.\n",
                    Expanded::Auto => "Expanded display is used automatically.\n",
                })
            }
            "\\timing" => {
                self.timing = self.on_off("\\timing", arg, self.timing, line)?;
                self.say(if self.timing { "Timing is on.\n" } else { "Timing is off.\n" })
            }
            "\\conninfo" => self.say(&format!("{}\n", self.conninfo)),
            "\\stats" | "\\status" => {
                self.ran -= 1;
                let sql = if cmd == "\\stats" { "SHOW STATS" } else { "SHOW STATUS" };
                self.statement(&Statement { text: sql.into(), line })
            }
            _ => self.refuse(format!("invalid command {}. Try \\? for help.", safe_text(cmd)), line),
        }
    }

    fn statement(&mut self, s: &Statement) -> Result<Flow, Failure> {
        // A meta-command after a ';' on the same line (`SELECT …; \x`).
        if s.text.starts_with('\\') {
            return self.meta(&s.text, s.line);
        }
        self.ran += 1;
        self.last = Some(s.clone());
        let sql = expand(&s.text).unwrap_or(&s.text);
        let started = Instant::now();
        let rs = match self.client.execute(sql) {
            Ok(rs) => rs,
            Err(e) => {
                self.report(&Problem::of(&e), Some(s));
                return Err(Failure { fatal: fatal(&e) });
            }
        };
        let elapsed = started.elapsed();
        self.print(&rs).map_err(|e| self.output_failed(e))?;
        if self.timing {
            let line = format!("Time: {:.3} ms\n", elapsed.as_secs_f64() * 1000.0);
            // On stdout beside a table, as psql; beside JSON or CSV on stderr, so that the
            // output stays one format.
            if self.format == Format::Table {
                self.say(&line)?;
            } else {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
        Ok(Flow::Go)
    }

    fn print(&self, rs: &ResultSet) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        match self.format {
            Format::Json => print::print_json(rs, &mut out)?,
            Format::Csv => print::print_csv(rs, &mut out)?,
            Format::Table => {
                let expanded = match self.expanded {
                    Expanded::On => true,
                    Expanded::Off => false,
                    Expanded::Auto => print::table_too_wide(rs, terminal_columns()),
                };
                if expanded {
                    print::print_expanded(rs, &mut out)?
                } else {
                    print::print_table(rs, &mut out)?
                }
            }
        }
        out.flush()
    }
}

/// The terminal's width: stdout's window size, else $COLUMNS, else 80.
fn terminal_columns() -> usize {
    // SAFETY: TIOCGWINSZ fills the local struct, or fails and leaves it zero.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c| c > 0).unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_the_byte() {
        assert_eq!(
            caret("SELECT value FORM kv", "at byte 13: expected FROM, found 'FORM'").unwrap(),
            "LINE 1: SELECT value FORM kv\n                     ^"
        );
        assert_eq!(
            caret("SELECT value\nFROM kv\n\tWHERE kee = 'a'", "at byte 28: expected KEY").unwrap(),
            "LINE 3:  WHERE kee = 'a'\n               ^"
        );
        let long = format!("INSERT INTO kv (key, value) VALUES ('{}', 'v') x", "k".repeat(500));
        let c = caret(&long, &format!("at byte {}: expected end", long.len() - 1)).unwrap();
        assert!(c.starts_with("LINE 1: …kkk") && c.lines().all(|l| l.chars().count() < 120), "{c}");
        assert_eq!(caret("SELECT", "at byte 99: x"), None);
        assert_eq!(caret("SELECT", "key not found"), None);
        assert_eq!(caret("é", "at byte 1: x"), None);
    }

    #[test]
    fn problems_as_json() {
        let p = Problem::of(&ClientError::Server(velocity::WireError::not_found()));
        assert_eq!(
            p.json(Some("dump.sql"), Some(3)),
            r#"{"error":"KEY_NOT_FOUND","code":4,"message":"key not found","file":"dump.sql","line":3}"#
        );
        let p = Problem::of(&ClientError::Auth { status: 1, message: "invalid credentials".into() });
        assert_eq!((p.kind.as_str(), p.code), ("INVALID_CREDENTIALS", Some(1)));
        assert_eq!(Problem::usage("x").json(None, None), r#"{"error":"USAGE","message":"x"}"#);
    }
}
