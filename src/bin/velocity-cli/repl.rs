//! The interactive shell on a terminal: rustyline for editing, history and Tab completion of
//! keywords, meta-commands and their arguments.

use crate::help;
use crate::shell::{Flow, Shell};
use crate::split::{Splitter, State};
use rustyline::completion::Completer;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::Editor;
use std::cell::Cell;
use std::io::Write;
use std::process::ExitCode;

/// The dialect's keywords, completed in the case typed (upper case for an empty prefix).
const KEYWORDS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "SHOW", "FROM", "WHERE", "INTO", "VALUES", "SET", "ORDER", "BY",
    "ASC", "DESC", "LIMIT", "IN", "LIKE", "BETWEEN", "AND", "COUNT(*)", "NULL", "STATS", "STATUS", "SLOWLOG",
    "RESET",
];

/// The table and its columns, completed in lower case unless the prefix has a capital.
const NAMES: &[&str] = &["kv", "key", "value", "ttl"];

/// Completions of the word before `pos` in `line`, whose start is inside `state` (the
/// statement typed on the lines before): where the word starts, and the candidates, each
/// with a trailing space.
pub fn complete(state: State, line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = &line[..pos.min(line.len())];
    let trimmed = before.trim_start();
    if state == State::Code && trimmed.starts_with('\\') {
        let lead = before.len() - trimmed.len();
        let Some((cmd, rest)) = trimmed.split_once(char::is_whitespace) else {
            let mut c: Vec<String> = help::META
                .iter()
                .map(|m| m.0)
                .chain(["\\help"])
                .filter(|m| m.starts_with(trimmed))
                .map(|m| format!("{m} "))
                .collect();
            c.sort();
            return (lead, c);
        };
        let arg = rest.trim_start();
        if arg.contains(char::is_whitespace) {
            return (pos, Vec::new());
        }
        let choices: Vec<&str> = match cmd {
            "\\h" | "\\help" => help::topics().iter().filter_map(|t| t.name.split(' ').next()).collect(),
            "\\timing" => vec!["on", "off"],
            "\\x" => vec!["on", "off", "auto"],
            _ => Vec::new(),
        };
        let mut c: Vec<String> = choices
            .into_iter()
            .filter(|w| w.len() >= arg.len() && w[..arg.len()].eq_ignore_ascii_case(arg))
            .map(|w| format!("{w} "))
            .collect();
        c.dedup();
        return (pos - arg.len(), c);
    }
    // No keywords inside a literal or a comment.
    let mut s = Splitter::starting_in(state);
    s.feed(before);
    if s.state() != State::Code {
        return (pos, Vec::new());
    }
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let prefix = &before[start..];
    let capital = prefix.chars().any(|c| c.is_ascii_uppercase());
    let matches = |w: &&&str| w.len() >= prefix.len() && w[..prefix.len()].eq_ignore_ascii_case(prefix);
    let keywords = KEYWORDS.iter().filter(matches).map(|k| {
        if !prefix.is_empty() && !capital {
            format!("{} ", k.to_ascii_lowercase())
        } else {
            format!("{k} ")
        }
    });
    let names = NAMES
        .iter()
        .filter(matches)
        .map(|n| if capital { n.to_ascii_uppercase() } else { n.to_string() } + " ");
    (start, keywords.chain(names).collect())
}

/// rustyline's helper: completion, knowing where the previous lines left the statement.
#[derive(Default)]
struct Helper {
    line_state: Cell<State>,
}

impl Completer for Helper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(self.line_state.get(), line, pos))
    }
}

impl Hinter for Helper {
    type Hint = String;
}
impl Highlighter for Helper {}
impl Validator for Helper {}
impl rustyline::Helper for Helper {}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub fn run(shell: &mut Shell, banner: &str) -> ExitCode {
    let config = Config::builder().completion_type(CompletionType::List).auto_add_history(false).build();
    let mut rl: Editor<Helper, DefaultHistory> = match Editor::with_config(config) {
        Ok(r) => r,
        Err(e) => {
            warn!("velocity-cli: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    rl.set_helper(Some(Helper::default()));
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".velocity_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    // Saved as each entry is added, before it runs: a session that ends by an error return,
    // a panic or a kill keeps what was typed.
    let remember = |rl: &mut Editor<Helper, DefaultHistory>, entry: &str| {
        let _ = rl.add_history_entry(entry.trim());
        if let Some(h) = &history {
            let _ = rl.save_history(h);
        }
    };
    say(banner);
    // The lines of the statement being typed, for one history entry.
    let mut entry = String::new();
    loop {
        if let Some(h) = rl.helper_mut() {
            h.line_state.set(shell.split.state());
        }
        let line = match rl.readline(shell.prompt()) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                shell.split.reset();
                entry.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                warn!("velocity-cli: cannot read the terminal: {e}");
                return ExitCode::FAILURE;
            }
        };
        let t = line.trim();
        if !shell.split.continuing() {
            let word = t.trim_end_matches(';').trim_end();
            let lower = word.to_ascii_lowercase();
            if lower == "quit" || lower == "exit" {
                break;
            }
            if lower == "help" || lower.starts_with("help ") {
                remember(&mut rl, t);
                let arg = word[4..].trim();
                if arg.is_empty() {
                    say(&help::intro());
                } else {
                    // `help SELECT` is `\h SELECT`; it only prints, so it cannot end the session.
                    shell.run(vec![crate::shell::Item::Meta { text: format!("\\h {arg}"), line: 1 }]);
                }
                continue;
            }
            if let Some(hint) = help::redis_hint(t) {
                remember(&mut rl, t);
                say(&hint);
                continue;
            }
        }
        if !t.is_empty() || shell.split.continuing() {
            entry.push_str(&line);
            entry.push('\n');
        }
        let items = shell.take(&format!("{line}\n"));
        if !shell.split.continuing() && !entry.trim().is_empty() {
            remember(&mut rl, &std::mem::take(&mut entry));
        }
        match shell.run(items) {
            Flow::Go => {}
            Flow::Quit => break,
            Flow::Stop => return ExitCode::FAILURE,
        }
        // `\g` or `\r` may have emptied the statement after the line was taken.
        if !shell.split.continuing() && !entry.trim().is_empty() {
            remember(&mut rl, &std::mem::take(&mut entry));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(state: State, line: &str) -> (usize, Vec<String>) {
        complete(state, line, line.len())
    }

    #[test]
    fn keywords_complete_in_the_case_typed() {
        assert_eq!(cands(State::Code, "sel"), (0, vec!["select ".into()]));
        assert_eq!(cands(State::Code, "SEL"), (0, vec!["SELECT ".into()]));
        assert_eq!(cands(State::Code, "select value fr"), (13, vec!["from ".into()]));
        assert_eq!(cands(State::Code, "SELECT * FROM K"), (14, vec!["KV ".into(), "KEY ".into()]));
        assert_eq!(cands(State::Code, "select * from k").1, ["kv ", "key "]);
        assert_eq!(cands(State::Code, "SELECT cou").1, ["count(*) "]);
        assert_eq!(cands(State::Code, "SELECT * FROM kv WHERE key = 'sel").1, Vec::<String>::new());
        assert_eq!(
            cands(State::Quote, "sel").1,
            Vec::<String>::new(),
            "inside a literal begun on a line before"
        );
        assert_eq!(cands(State::Block(1), "*/ sel").1, ["select "]);
        assert_eq!(cands(State::Code, "-- sel").1, Vec::<String>::new());
        assert!(cands(State::Code, "").1.len() >= KEYWORDS.len());
        assert_eq!(cands(State::Code, "SELECT value FROM kv; del"), (22, vec!["delete ".into()]));
    }

    #[test]
    fn meta_commands_and_their_arguments_complete() {
        assert_eq!(cands(State::Code, "\\tim"), (0, vec!["\\timing ".into()]));
        assert_eq!(cands(State::Code, "  \\st").1, ["\\stats ", "\\status "]);
        assert_eq!(cands(State::Code, "\\h").1, ["\\h ", "\\help "]);
        assert_eq!(cands(State::Code, "\\h ins"), (3, vec!["INSERT ".into()]));
        assert_eq!(cands(State::Code, "\\help s").1, ["SELECT ", "SHOW "]);
        assert_eq!(cands(State::Code, "\\x a"), (3, vec!["auto ".into()]));
        assert_eq!(cands(State::Code, "\\timing o").1, ["on ", "off "]);
        assert_eq!(cands(State::Quote, "\\tim").1, Vec::<String>::new());
    }
}
