//! Every code block of README.md and docs/*.md runs as written, or is checked as said here:
//! the docs must not rot.
//!
//! The files are read when the test runs, from the repository (CARGO_MANIFEST_DIR): README.md
//! and every docs/*.md, a new one included. A block is a fenced block (``` or ~~~, at any
//! indentation, closed by a fence of the same character at least as long), with its info
//! string and the line of its opening fence. Every failure is named `FILE:LINE: …`; what was
//! run and what only checked is printed for every block (`cargo test --release --test
//! docs_examples -- --nocapture`).
//!
//! # Info strings
//!
//! Every block has one of these (one word); a block without one, or with any other, fails.
//!
//! | info string | what happens |
//! |---|---|
//! | `sql` | run through `velocity-cli` against a real `velocityd` (below) |
//! | `sh`, `bash`, `shell` | each command runs, or is checked without running (below) |
//! | `python` | compiled by `python3` (`compile()`, top-level `await` allowed: asyncio fragments) |
//! | `js`, `javascript` | parsed as an ES module by `node --check` (top-level `await` allowed) |
//! | `json` | parsed: one JSON value, or one on each non-blank line (JSON lines, as `--json` prints) |
//! | `go`, `java`, `rust` | not checked, for these reasons: they are fragments that use names from around them (`pw`, `keys`, `ctx`); Go and Java are installed by scripts/test-go.sh and scripts/test-java.sh, which run after `cargo test`; those suites build and run clients/go/examples and clients/java/examples, and tests/e2e_*.rs make the Rust client's calls |
//! | `text` | output, logs, file listings, diagrams: not run |
//! | `yaml` | not checked here: the Prometheus configuration and alert rules of docs/operations.md are checked by `promtool check config` / `check rules` and loaded into a real Prometheus by tests/e2e_metrics.rs |
//!
//! python3 and Node.js are installed by scripts/test.sh before `cargo test` runs; without them
//! this test fails rather than skip.
//!
//! # Where the blocks run
//!
//! Each file gets its own environment, made before its first `sql` or `sh` block; its blocks
//! then run in document order, so a SELECT sees the INSERT of a block above it (a shell
//! variable lives within its block only):
//!
//! - a scratch directory S, the current directory of shell blocks, whose `target/release/`
//!   holds the `velocityd`, `velocity-cli` and `velocity-bench` this test was built with (the
//!   same directory is first on PATH, for a bare `velocityd`);
//! - a running velocityd (TLS, 2 cores, a free loopback port P) with the user `admin`
//!   (readwrite), whose password is `$PW`;
//! - HOME = S/home, whose `.velocity/known_hosts` holds that server's key, as the quick start's
//!   first connection leaves it;
//! - D, a data directory that no server runs on (as `velocityd repair` needs): the user admin
//!   with `$PW`, one API key of admin's, and the logs, identity and audit log of a server that
//!   ran on it, took a write and was stopped.
//!
//! # `sql` blocks
//!
//! A block is written to a file, padded so that its lines are the doc's lines, and run by
//! `velocity-cli -U admin --password-stdin --json --continue-on-error -f FILE` against that
//! server. Every statement must succeed, except one whose `;` is followed on its line by the
//! comment `-- error: CODE` (CODE as `--json` names it, e.g. `KEY_NOT_FOUND`): that one must
//! fail with that code. Meta-commands (`\x`) run as the CLI runs them.
//!
//! # `sh` blocks
//!
//! A command is a line; a line ending in `\` goes on on the next, and so does an indented line
//! (the synopsis style of `velocityd … [--flag N]` over two lines), which is allowed only in a
//! command that is checked, not run, since a shell would run it as a command of its own.
//! Comments (`#`) and blank lines are skipped. A command is split into simple commands (at
//! `|`, `||`, `&&`, `;`, `&`, and inside `$( )`), each with its program (past `VAR=value`,
//! `env`, `nice`, `time` and redirections). A command runs when each of its programs runs by
//! this table; otherwise every program in it is checked:
//!
//! | program | |
//! |---|---|
//! | `velocityd` with a subcommand (`user`, `apikey`, `keygen`, `fingerprint`, `audit`, `repair`, `backup`, `restore`, `help`), `--help` or `--version` | runs |
//! | `velocityd` otherwise: it would serve, in the foreground | checked: each `-x` / `--flag` is in `velocityd --help`, and each value of a flag that has possible values (`sync\|periodic\|none` too) is one of them |
//! | `velocity-cli` | runs, unless `-h`/`--host` names another host than 127.0.0.1 or localhost (then checked like a serving velocityd) |
//! | `velocity-bench` | runs if it ends within about 10 s: `--plot-compare`, `--requests`, or `--duration-s` (default 10) plus `--idle-s` at most 10; else checked |
//! | a path in the repository (`scripts/quickstart.sh`, `scripts/test.sh`, …) | checked: it exists, is executable, and `bash -n` parses it (a `.py` compiles): scripts are long-running (benchmarks, the whole test suite, a server in the foreground) or install things |
//! | `python3`, `python` | checked: the `.py` it runs exists and compiles (the Python client is installed by scripts/test.sh after `cargo test`; scripts/test-packages.sh runs the examples) |
//! | `taskset` | checked, with the program it wraps: it pins the CPUs a measurement used, which this machine may not have |
//! | `apt-get`, `apt`, `sudo`, `pip`, `pip3`, `npm`, `npx`, `node`, `go`, `mvn`, `java`, `javac`, `cargo`, `rustup`, `curl`, `wget`, `git`, `pytest`, `sysctl`, `systemctl` | checked, no more than this listing: they install or change the machine |
//! | `echo`, `printf`, `cat`, `awk`, `sed`, `grep`, `head`, `tail`, `wc`, `sort`, `cut`, `tr`, `ls`, `xxd`, `od`, `tar`, `mkdir`, `cp`, `mv`, `rm`, `test`, `true`, `sleep`, `export`, `cd` | runs |
//! | anything else | fails: give it a rule here |
//!
//! Also checked rather than run: a synopsis (a word in `[ ]`, an optional part, or `a|b`
//! alternatives: a `|` inside `[ ]` or with no space before and after it is then no pipe),
//! a command sent to the background (`&`: a server), and one naming an absolute path other
//! than /dev/null outside single quotes (`/etc/velocity/data.key`: it would write outside S).
//! Checking one of the three binaries also descends into its subcommands, so `velocityd
//! keygen --out /etc/…` is checked against `velocityd keygen --help`.
//!
//! The commands of a block that run are written, in order, to one `bash` script (`set -u -o
//! pipefail`), run from S with standard input /dev/null; the block fails at the first command
//! that exits non-zero, showing its output. The environment holds only PATH, HOME, `PW`,
//! `VELOCITY_PASSWORD=$PW` (what a person would type at the CLI's password prompt: there is
//! no terminal here, and the interactive `velocity-cli -u admin` reads an empty script) and
//! `VELOCITY_PORT=P` (velocity-cli's default port). In commands that run, these placeholders
//! are replaced where they stand unquoted, as a word or at the start of a path (`D/wal`):
//!
//! | placeholder | replaced by |
//! |---|---|
//! | `D` | the data directory D above |
//! | `ID` | the id of D's API key (`velocityd apikey revoke ID`) |
//! | `K` | S/K, where there is no file yet (`velocityd keygen --out K` makes it) |
//! | `7411` | P, also as `HOST:7411` and `--port=7411` (7411 is the quick start's port) |
//!
//! Nothing else is rewritten: the text of a block is what runs.

mod common;

use common::{add_user, temp_dir, Server, PASSWORD};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A CLI run or a block's script that takes longer has hung.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The longest velocity-bench run that runs (seconds of load, warm-up aside).
const BENCH_MAX_S: u64 = 10;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exe(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "velocityd" => env!("CARGO_BIN_EXE_velocityd"),
        "velocity-cli" => env!("CARGO_BIN_EXE_velocity-cli"),
        "velocity-bench" => env!("CARGO_BIN_EXE_velocity-bench"),
        _ => unreachable!("{name}"),
    })
}

const BINARIES: [&str; 3] = ["velocityd", "velocity-cli", "velocity-bench"];

/// README.md and docs/*.md, relative to the repository.
fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

// ---------------------------------------------------------------------------------------------
// Fenced blocks

#[derive(Clone, Debug)]
struct Block {
    file: String,
    /// The line of the opening fence (1-based); the body starts on the next.
    line: usize,
    info: String,
    body: Vec<String>,
}

impl Block {
    /// The doc's line number of body line `i` (0-based).
    fn line_of(&self, i: usize) -> usize {
        self.line + 1 + i
    }
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
    /// The body, preceded by blank lines so that its line numbers are the doc's.
    fn padded(&self) -> String {
        let mut s = "\n".repeat(self.line);
        for l in &self.body {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

fn fence(line: &str) -> Option<(char, usize, &str)> {
    let t = line.trim_start();
    let c = t.chars().next().filter(|&c| c == '`' || c == '~')?;
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then(|| (c, n, t[n..].trim()))
}

/// The fenced blocks of `text` (CommonMark's rules, but a fence may be indented any amount).
fn blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((c, n, info)) = fence(lines[i]) else {
            i += 1;
            continue;
        };
        if c == '`' && info.contains('`') {
            i += 1; // inline code at the start of a line, not a fence
            continue;
        }
        let indent = lines[i].len() - lines[i].trim_start().len();
        let mut j = i + 1;
        let mut body = Vec::new();
        loop {
            if j == lines.len() {
                return Err(format!("{file}:{}: this fence is never closed", i + 1));
            }
            if let Some((c2, n2, rest)) = fence(lines[j]) {
                if c2 == c && n2 >= n && rest.is_empty() {
                    break;
                }
            }
            let l = lines[j];
            let strip = l.len() - l.trim_start_matches(' ').len();
            body.push(l[strip.min(indent)..].to_owned());
            j += 1;
        }
        out.push(Block { file: file.to_owned(), line: i + 1, info: info.to_owned(), body });
        i = j + 1;
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    Sql,
    Shell,
    Python,
    Js,
    Json,
    Text,
    /// Not checked, for this reason (see the header).
    Unchecked(&'static str),
}

fn lang(info: &str) -> Result<Lang, String> {
    Ok(match info {
        "sql" => Lang::Sql,
        "sh" | "bash" | "shell" => Lang::Shell,
        "python" => Lang::Python,
        "js" | "javascript" => Lang::Js,
        "json" => Lang::Json,
        "text" => Lang::Text,
        "go" => Lang::Unchecked(
            "a fragment; Go comes with scripts/test-go.sh (after cargo test), which runs clients/go/examples",
        ),
        "java" => Lang::Unchecked(
            "a fragment; Java comes with scripts/test-java.sh (after cargo test), which runs the client's tests and example",
        ),
        "rust" => Lang::Unchecked("a fragment (pw, ?); tests/e2e_*.rs make the Rust client's calls"),
        "yaml" => Lang::Unchecked(
            "Prometheus configuration: tests/e2e_metrics.rs checks it with promtool and runs a real Prometheus with it",
        ),
        "" => return Err("a block needs an info string: sql, sh, text, json, yaml, python, js, go, java or rust (see tests/docs_examples.rs)".into()),
        other => return Err(format!("info string `{other}` has no rule in tests/docs_examples.rs (sql, sh, bash, shell, text, json, yaml, python, js, javascript, go, java, rust)")),
    })
}

// ---------------------------------------------------------------------------------------------
// SQL: where statements start and end, and which must fail

#[derive(Debug, PartialEq, Eq)]
struct Stmt {
    /// The doc's line of its first token (what the CLI reports).
    start: usize,
    /// The doc's line of its `;` (or of its last token, at the end of the block).
    end: usize,
}

/// The statements of a sql block, and the `-- error: CODE` annotations: start line → CODE.
/// The same rules as the CLI's splitter: `'…'` with `''`, `--` to the end of the line, nested
/// `/* */`, meta-commands on lines of their own.
fn split_sql(b: &Block) -> Result<(Vec<Stmt>, BTreeMap<usize, String>), String> {
    #[derive(PartialEq)]
    enum St {
        Code,
        Quote,
        Comment(u32),
    }
    let mut st = St::Code;
    let mut stmts = Vec::new();
    let mut start: Option<usize> = None;
    let mut last_token = 0;
    let mut notes: BTreeMap<usize, String> = BTreeMap::new();
    for (i, line) in b.body.iter().enumerate() {
        let ln = b.line_of(i);
        if st == St::Code && start.is_none() && line.trim_start().starts_with('\\') {
            continue;
        }
        let ch: Vec<char> = line.chars().collect();
        let mut k = 0;
        while k < ch.len() {
            let c = ch[k];
            let next = ch.get(k + 1).copied();
            match st {
                St::Quote => {
                    if c == '\'' {
                        if next == Some('\'') {
                            k += 1;
                        } else {
                            st = St::Code;
                        }
                    }
                }
                St::Comment(d) => {
                    if c == '*' && next == Some('/') {
                        st = if d == 1 { St::Code } else { St::Comment(d - 1) };
                        k += 1;
                    } else if c == '/' && next == Some('*') {
                        st = St::Comment(d + 1);
                        k += 1;
                    }
                }
                St::Code => {
                    if c == '-' && next == Some('-') {
                        let text: String = ch[k + 2..].iter().collect();
                        if let Some(code) = text.trim().strip_prefix("error:") {
                            let code = code.split_whitespace().next().unwrap_or("").to_owned();
                            if code.is_empty() {
                                return Err(format!("{}:{ln}: `-- error:` without a code", b.file));
                            }
                            notes.insert(ln, code);
                        }
                        break;
                    } else if c == '/' && next == Some('*') {
                        st = St::Comment(1);
                        k += 1;
                    } else if c == ';' {
                        if let Some(s) = start.take() {
                            stmts.push(Stmt { start: s, end: ln });
                        }
                    } else if !c.is_whitespace() {
                        start.get_or_insert(ln);
                        last_token = ln;
                        if c == '\'' {
                            st = St::Quote;
                        }
                    }
                }
            }
            k += 1;
        }
    }
    if st != St::Code {
        return Err(format!("{}: the block ends inside a literal or comment", b.at()));
    }
    if let Some(s) = start {
        stmts.push(Stmt { start: s, end: last_token });
    }
    let mut expected = BTreeMap::new();
    for (ln, code) in notes {
        match stmts.iter().find(|s| s.end == ln) {
            Some(s) => {
                expected.insert(s.start, code);
            }
            None => {
                return Err(format!(
                    "{}:{ln}: `-- error: {code}` must follow a statement's `;` on its line",
                    b.file
                ))
            }
        }
    }
    Ok((stmts, expected))
}

// ---------------------------------------------------------------------------------------------
// Shell: lines into commands, commands into simple commands

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Word {
    /// With quotes removed and escapes resolved; `$…` left as written.
    text: String,
    /// Part of it was in single quotes (an awk program, a literal).
    single: bool,
}

#[derive(Clone, Debug, Default)]
struct Simple {
    words: Vec<Word>,
    redirects: Vec<Word>,
}

#[derive(Debug, Default)]
struct Lexed {
    simple: Vec<Simple>,
    background: bool,
    /// Written as a synopsis: a word in `[ ]`, or `a|b` alternatives.
    synopsis: bool,
}

/// A logical command of a shell block.
#[derive(Debug)]
struct ShellCmd {
    /// The doc's line of its first line.
    line: usize,
    /// As written (continuation lines included, with their `\` and newline).
    text: String,
    /// It goes on over an indented line without a `\`.
    indented: bool,
}

/// The commands of a shell block.
fn shell_commands(b: &Block) -> Vec<ShellCmd> {
    let mut out: Vec<ShellCmd> = Vec::new();
    let mut continued = false;
    // The line above belongs to a command (it is not blank or a comment).
    let mut in_cmd = false;
    for (i, line) in b.body.iter().enumerate() {
        let t = line.trim();
        if t.is_empty() || (!continued && t.starts_with('#')) {
            continued = false;
            in_cmd = false;
            continue;
        }
        let indented_cont = !continued && in_cmd && line.starts_with([' ', '\t']);
        in_cmd = true;
        if continued || indented_cont {
            let last = out.last_mut().unwrap();
            last.text.push('\n');
            last.text.push_str(line);
            last.indented |= indented_cont;
        } else {
            out.push(ShellCmd { line: b.line_of(i), text: line.clone(), indented: false });
        }
        continued = ends_with_continuation(line);
    }
    out
}

/// A `\` at the end of the line, outside a comment.
fn ends_with_continuation(line: &str) -> bool {
    let t = line.trim_end();
    t.ends_with('\\') && !t.ends_with("\\\\") && comment_start(t).is_none()
}

/// Where a `#` comment starts on this line, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let (mut sq, mut dq) = (false, false);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if !sq => i += 1,
            b'\'' if !dq => sq = !sq,
            b'"' if !sq => dq = !dq,
            b'#' if !sq && !dq && (i == 0 || b[i - 1].is_ascii_whitespace()) => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Split a command into simple commands: a small POSIX-shell lexer (quotes, escapes, `#`
/// comments, `|`, `||`, `&&`, `;`, `&`, `$( )`, redirections).
fn lex(text: &str) -> Result<Lexed, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexed = Lexed::default();
    let mut i = 0;
    lex_list(&chars, &mut i, &mut lexed, false)?;
    Ok(lexed)
}

fn lex_list(ch: &[char], i: &mut usize, out: &mut Lexed, nested: bool) -> Result<(), String> {
    let mut cur = Simple::default();
    let mut word: Option<Word> = None;
    let mut redirect = false;
    // Unquoted `[` not yet closed: a synopsis's optional part, in which `|` separates
    // alternatives.
    let mut depth = 0usize;
    fn finish(word: &mut Option<Word>, cur: &mut Simple, redirect: &mut bool) {
        if let Some(w) = word.take() {
            if *redirect {
                cur.redirects.push(w);
                *redirect = false;
            } else {
                cur.words.push(w);
            }
        }
    }
    fn push(cur: &mut Simple, out: &mut Lexed) {
        let c = std::mem::take(cur);
        if !c.words.is_empty() || !c.redirects.is_empty() {
            out.simple.push(c);
        }
    }
    fn w(word: &mut Option<Word>) -> &mut Word {
        word.get_or_insert_with(Word::default)
    }
    while *i < ch.len() {
        let c = ch[*i];
        let prev = if *i > 0 { Some(ch[*i - 1]) } else { None };
        let next = ch.get(*i + 1).copied();
        match c {
            ' ' | '\t' | '\n' => finish(&mut word, &mut cur, &mut redirect),
            '\\' => {
                if next == Some('\n') {
                    finish(&mut word, &mut cur, &mut redirect);
                } else if let Some(n) = next {
                    w(&mut word).text.push(n);
                }
                *i += 1;
            }
            '\'' => {
                let wd = w(&mut word);
                wd.single = true;
                *i += 1;
                while *i < ch.len() && ch[*i] != '\'' {
                    wd.text.push(ch[*i]);
                    *i += 1;
                }
                if *i == ch.len() {
                    return Err("a ' quote is not closed".into());
                }
            }
            '"' => {
                w(&mut word);
                *i += 1;
                loop {
                    let Some(&d) = ch.get(*i) else { return Err("a \" quote is not closed".into()) };
                    match d {
                        '"' => break,
                        '\\' if matches!(ch.get(*i + 1), Some('"' | '\\' | '$' | '`')) => {
                            w(&mut word).text.push(ch[*i + 1]);
                            *i += 1;
                        }
                        '$' if ch.get(*i + 1) == Some(&'(') => {
                            let from = *i;
                            *i += 2;
                            lex_list(ch, i, out, true)?;
                            w(&mut word).text.extend(&ch[from..*i]);
                            continue;
                        }
                        _ => w(&mut word).text.push(d),
                    }
                    *i += 1;
                }
            }
            '#' if word.is_none() => {
                while *i < ch.len() && ch[*i] != '\n' {
                    *i += 1;
                }
                continue;
            }
            '$' if next == Some('(') => {
                let from = *i;
                *i += 2;
                lex_list(ch, i, out, true)?;
                w(&mut word).text.extend(&ch[from..*i]);
                continue;
            }
            ')' if nested => {
                finish(&mut word, &mut cur, &mut redirect);
                push(&mut cur, out);
                *i += 1;
                return Ok(());
            }
            '[' => {
                out.synopsis |= word.is_none();
                depth += 1;
                w(&mut word).text.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                w(&mut word).text.push(c);
            }
            // `sync|periodic|none`, `[a | b]`: a synopsis's alternatives, not a pipe.
            '|' if depth > 0
                || (prev.is_some_and(|p| !p.is_whitespace())
                    && next.is_some_and(|n| !n.is_whitespace() && n != '|')) =>
            {
                out.synopsis = true;
                w(&mut word).text.push(c);
            }
            '(' | ')' | '`' => return Err(format!("`{c}` (subshells, backquotes) has no rule here")),
            '|' | '&' | ';' => {
                finish(&mut word, &mut cur, &mut redirect);
                push(&mut cur, out);
                if next == Some(c) && c != ';' {
                    *i += 1;
                } else if c == '&' && next == Some('>') {
                    redirect = true;
                    *i += 1;
                } else if c == '&' {
                    out.background = true;
                }
            }
            '<' | '>' => {
                // `2>`: the digits lexed as a word are the descriptor.
                if word
                    .as_ref()
                    .is_some_and(|w| !w.text.is_empty() && w.text.chars().all(|d| d.is_ascii_digit()))
                {
                    word = None;
                }
                finish(&mut word, &mut cur, &mut redirect);
                while matches!(ch.get(*i + 1), Some('>' | '<' | '&')) {
                    *i += 1;
                }
                redirect = true;
            }
            _ => w(&mut word).text.push(c),
        }
        *i += 1;
    }
    if nested {
        return Err("a `$(` is not closed".into());
    }
    finish(&mut word, &mut cur, &mut redirect);
    push(&mut cur, out);
    Ok(())
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// The program of a simple command and its arguments, past assignments and `env`, `nice`,
/// `time`.
fn program(s: &Simple) -> Option<(&str, &[Word])> {
    let mut w = &s.words[..];
    while let Some(first) = w.first() {
        let t = first.text.as_str();
        if is_assignment(t) {
            w = &w[1..];
        } else if t == "env" || t == "time" {
            w = &w[1..];
            while w.first().is_some_and(|x| x.text.starts_with('-') || is_assignment(&x.text)) {
                w = &w[1..];
            }
        } else if t == "nice" {
            w = &w[1..];
            if w.first().is_some_and(|x| x.text == "-n") {
                w = &w[w.len().min(2)..];
            } else if w.first().is_some_and(|x| x.text.starts_with('-')) {
                w = &w[1..];
            }
        } else {
            return Some((t, &w[1..]));
        }
    }
    None
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

const UTILITIES: &[&str] = &[
    "echo", "printf", "cat", "awk", "sed", "grep", "head", "tail", "wc", "sort", "cut", "tr", "ls", "xxd",
    "od", "tar", "mkdir", "cp", "mv", "rm", "test", "true", "sleep", "export", "cd",
];
const MACHINE: &[&str] = &[
    "apt-get",
    "apt",
    "sudo",
    "pip",
    "pip3",
    "npm",
    "npx",
    "node",
    "go",
    "mvn",
    "java",
    "javac",
    "cargo",
    "rustup",
    "curl",
    "wget",
    "git",
    "pytest",
    "sysctl",
    "systemctl",
];

/// Whether one simple command runs, or is only checked (and why).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Run,
    Check(String),
}

fn value_of<'a>(args: &'a [Word], names: &[&str]) -> Option<&'a str> {
    for (k, a) in args.iter().enumerate() {
        for n in names {
            if a.text == *n {
                return args.get(k + 1).map(|w| w.text.as_str());
            }
            if let Some(v) = a.text.strip_prefix(&format!("{n}=")) {
                return Some(v);
            }
        }
    }
    None
}

fn has(args: &[Word], flag: &str) -> bool {
    args.iter().any(|a| a.text == flag || a.text.starts_with(&format!("{flag}=")))
}

fn local_host(h: Option<&str>) -> bool {
    h.is_none_or(|h| h == "127.0.0.1" || h == "localhost")
}

/// The subcommands that a `--help` lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn classify(prog: &str, args: &[Word]) -> Result<Verdict, String> {
    let name = base_name(prog);
    Ok(match name {
        "velocityd" => {
            let first = args.first().map(|w| w.text.as_str()).unwrap_or("");
            if args.iter().any(|a| ["--help", "-h", "--version", "-V"].contains(&a.text.as_str()))
                || subcommands(&help_text("velocityd", &[])).iter().any(|s| s == first)
            {
                Verdict::Run
            } else {
                Verdict::Check("velocityd would serve, in the foreground: its flags are checked".into())
            }
        }
        "velocity-cli" => {
            let host = value_of(args, &["-h", "--host"]);
            if local_host(host) {
                Verdict::Run
            } else {
                Verdict::Check(format!(
                    "velocity-cli would connect to {}: its flags are checked",
                    host.unwrap()
                ))
            }
        }
        "velocity-bench" => {
            let host = value_of(args, &["--host"]);
            let secs =
                |n: &str, d: u64| value_of(args, &[n]).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
            let total = secs("--duration-s", 10) + secs("--idle-s", 0);
            if !local_host(host) {
                Verdict::Check(format!("velocity-bench would load {}: its flags are checked", host.unwrap()))
            } else if has(args, "--plot-compare") || has(args, "--requests") || total <= BENCH_MAX_S {
                Verdict::Run
            } else {
                Verdict::Check(format!("velocity-bench would run {total} s: its flags are checked"))
            }
        }
        "taskset" => Verdict::Check("taskset pins CPUs that this machine may not have".into()),
        "python3" | "python" => {
            Verdict::Check(format!("{name}: the Python client is not installed here; the script is compiled"))
        }
        _ if prog.contains('/') => {
            Verdict::Check(format!("{prog}: a script of the repository, not run here; checked with bash -n"))
        }
        _ if MACHINE.contains(&name) => Verdict::Check(format!("{name} installs or changes the machine")),
        _ if UTILITIES.contains(&name) => Verdict::Run,
        _ => return Err(format!("`{prog}` has no rule in tests/docs_examples.rs")),
    })
}

/// What one shell command is: whether it runs, and the simple commands to check if not.
fn verdicts(cmd: &ShellCmd) -> Result<(Vec<String>, Lexed), String> {
    let lexed = lex(&cmd.text)?;
    let mut reasons = Vec::new();
    if lexed.background {
        reasons.push("it runs in the background (`&`)".to_owned());
    }
    if lexed.synopsis {
        reasons.push("a synopsis (`[optional]` parts, `a|b` alternatives)".to_owned());
    }
    for s in &lexed.simple {
        for w in s.words.iter().chain(&s.redirects).filter(|w| !w.single) {
            let t = &w.text;
            let abs = t.starts_with('/') || t.contains("=/");
            if abs && t != "/dev/null" {
                reasons.push(format!("it names the absolute path {t}"));
            }
        }
        if let Some((prog, args)) = program(s) {
            if let Verdict::Check(r) = classify(prog, args)? {
                reasons.push(r);
            }
        }
    }
    Ok((reasons, lexed))
}

// ---------------------------------------------------------------------------------------------
// Checks without running

fn help_text(bin: &str, path: &[&str]) -> String {
    let out = Command::new(exe(bin)).args(path).arg("--help").output().expect("--help");
    assert!(out.status.success(), "{bin} {path:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every option a help text names (`-x`, `--flag`, aliases too).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '?'))
        .filter(|t| {
            (t.starts_with("--") && t.len() > 2)
                || (t.starts_with('-') && t.len() > 1 && !t[1..].starts_with('-'))
        })
        .map(str::to_owned)
        .collect()
}

/// The possible values that the help lists for `flag`, if any.
fn possible_values(help: &str, flag: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = help.lines().collect();
    let k = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with('-') && help_flags(t.split("  ").next().unwrap_or(t)).contains(flag)
    })?;
    let mut entry = lines[k].to_owned();
    for l in &lines[k + 1..] {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('-') {
            break;
        }
        entry.push(' ');
        entry.push_str(t);
    }
    let from = entry.find("[possible values: ")? + "[possible values: ".len();
    let to = entry[from..].find(']')? + from;
    Some(entry[from..to].split(", ").map(str::to_owned).collect())
}

fn strip_brackets(s: &str) -> &str {
    s.trim_start_matches(['[', '(']).trim_end_matches([']', ')', ','])
}

/// Check one of the three binaries' flags against its `--help`, descending into subcommands.
fn check_flags(bin: &str, args: &[Word]) -> Vec<String> {
    let mut path: Vec<&str> = Vec::new();
    let mut help = help_text(bin, &path);
    let mut rest = args;
    while let Some(first) = rest.first() {
        if subcommands(&help).contains(&first.text) {
            path.push(&first.text);
            help = help_text(bin, &path);
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let flags = help_flags(&help);
    let whom = std::iter::once(bin).chain(path.iter().copied()).collect::<Vec<_>>().join(" ");
    let mut errors = Vec::new();
    for (k, w) in rest.iter().enumerate() {
        for part in strip_brackets(&w.text).split('|') {
            let part = strip_brackets(part);
            if !part.starts_with('-') || part.len() < 2 || part[1..].starts_with(|c: char| c.is_ascii_digit())
            {
                continue;
            }
            let (flag, inline) = match part.split_once('=') {
                Some((f, v)) => (f, Some(v)),
                None => (part, None),
            };
            if !flags.contains(flag) {
                errors.push(format!("`{flag}` is not an option of `{whom}` (see `{whom} --help`)"));
                continue;
            }
            let Some(values) = possible_values(&help, flag) else { continue };
            let Some(value) = inline.or_else(|| rest.get(k + 1).map(|v| v.text.as_str())) else { continue };
            for alt in strip_brackets(value).split('|').map(strip_brackets) {
                if !values.iter().any(|v| v == alt) {
                    errors.push(format!("`{flag} {alt}`: `{whom}` takes {}", values.join(", ")));
                }
            }
        }
    }
    errors
}

/// Compile a Python file (top-level `await` allowed), named `name` in messages.
fn py_compile(path: &Path, name: &str) -> Result<(), String> {
    let prog = "import ast, sys\nsrc = open(sys.argv[1], encoding='utf-8').read()\ncompile(src, sys.argv[2], 'exec', flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)\n";
    let out = Command::new("python3")
        .args(["-c", prog])
        .arg(path)
        .arg(name)
        .output()
        .map_err(|e| format!("python3: {e} (scripts/test.sh installs it before cargo test)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(last_lines(&String::from_utf8_lossy(&out.stderr), 6))
    }
}

/// Check a script of the repository: it exists, is executable, and parses.
fn check_script(prog: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let p = repo().join(prog);
    let meta = std::fs::metadata(&p).map_err(|e| format!("{prog}: {e}"))?;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{prog} is not executable"));
    }
    if prog.ends_with(".py") {
        return py_compile(&p, prog);
    }
    let head = std::fs::read_to_string(&p).unwrap_or_default();
    if prog.ends_with(".sh")
        || head.starts_with("#!/bin/sh")
        || head.starts_with("#!/usr/bin/env bash")
        || head.starts_with("#!/bin/bash")
    {
        let out = Command::new("bash").arg("-n").arg(&p).output().map_err(|e| format!("bash: {e}"))?;
        if !out.status.success() {
            return Err(format!("bash -n {prog}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

/// Everything a command that is not run can be checked for.
fn static_checks(lexed: &Lexed) -> Vec<String> {
    let mut errors = Vec::new();
    for s in &lexed.simple {
        let Some((mut prog, mut args)) = program(s) else { continue };
        if base_name(prog) == "taskset" {
            // taskset [-c LIST | MASK] COMMAND…
            let skip = if args.first().is_some_and(|a| a.text.starts_with('-')) { 2 } else { 1 };
            let Some(inner) = args.get(skip) else { continue };
            prog = &inner.text;
            args = &args[skip + 1..];
        }
        let name = base_name(prog);
        if BINARIES.contains(&name) {
            errors.extend(check_flags(name, args));
        } else if name == "python3" || name == "python" {
            match args.iter().find(|a| !a.text.starts_with('-')) {
                Some(f) if f.text.ends_with(".py") => {
                    let p = repo().join(&f.text);
                    let checked = if p.is_file() {
                        py_compile(&p, &f.text)
                    } else {
                        Err(format!("{}: no such file", f.text))
                    };
                    if let Err(e) = checked {
                        errors.push(e);
                    }
                }
                _ => errors.push(format!("`{name}` runs no .py of the repository that could be checked")),
            }
        } else if prog.contains('/') {
            if let Err(e) = check_script(prog) {
                errors.push(e);
            }
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Placeholders

/// Replace the placeholders in the unquoted words of `text` (comments left alone).
fn substitute(text: &str, table: &[(&str, String)], port: u16) -> String {
    let rewrite = |w: &str| -> String {
        for (p, v) in table {
            if w == *p {
                return v.clone();
            }
            if let Some(rest) = w.strip_prefix(&format!("{p}/")) {
                return format!("{v}/{rest}");
            }
        }
        if w == "7411" {
            return port.to_string();
        }
        for sep in [":", "="] {
            if let Some(head) = w.strip_suffix(&format!("{sep}7411")) {
                return format!("{head}{sep}{port}");
            }
        }
        w.to_owned()
    };
    let mut out = String::new();
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let (code, comment) = match comment_start(line) {
            Some(c) => line.split_at(c),
            None => (line, ""),
        };
        let ch: Vec<char> = code.chars().collect();
        let mut i = 0;
        let mut run = String::new();
        let flush = |run: &mut String, out: &mut String| {
            out.push_str(&rewrite(run));
            run.clear();
        };
        while i < ch.len() {
            let c = ch[i];
            match c {
                '\'' | '"' => {
                    flush(&mut run, &mut out);
                    out.push(c);
                    i += 1;
                    while i < ch.len() && ch[i] != c {
                        if c == '"' && ch[i] == '\\' && i + 1 < ch.len() {
                            out.push(ch[i]);
                            i += 1;
                        }
                        out.push(ch[i]);
                        i += 1;
                    }
                    if i < ch.len() {
                        out.push(ch[i]);
                    }
                }
                ' ' | '\t' | '|' | '&' | ';' | '<' | '>' | '(' | ')' => {
                    flush(&mut run, &mut out);
                    out.push(c);
                }
                _ => run.push(c),
            }
            i += 1;
        }
        flush(&mut run, &mut out);
        out.push_str(comment);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running

struct Ran {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Run `cmd` with `input` on standard input (or /dev/null), killing its process group after
/// TIMEOUT. Output goes through files, so nothing blocks on a full pipe.
fn run_timed(mut cmd: Command, input: Option<&str>, tmp: &Path, tag: &str) -> Ran {
    let out_path = tmp.join(format!("{tag}.out"));
    let err_path = tmp.join(format!("{tag}.err"));
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = input {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    }
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ran { status, stdout: read(&out_path), stderr: read(&err_path) }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// A file's environment (see the header).
struct Env {
    scratch: PathBuf,
    home: PathBuf,
    server: Server,
    d: PathBuf,
    key_id: String,
}

impl Env {
    fn port(&self) -> u16 {
        self.server.addr.port()
    }

    fn start(file: &str) -> Env {
        let scratch = temp_dir(&format!("docs-{}", file.replace('/', "-")));
        let release = scratch.join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        for b in BINARIES {
            std::os::unix::fs::symlink(exe(b), release.join(b)).unwrap();
        }
        std::fs::create_dir_all(scratch.join("blocks")).unwrap();
        let home = scratch.join("home");
        std::fs::create_dir_all(&home).unwrap();

        let data = scratch.join("server");
        add_user(&data, "admin", PASSWORD, "readwrite");
        let server = Server::start_in(data, 2, &[]);
        // The quick start's first connection: it records the server's key in ~/.velocity.
        let env = Env { scratch: scratch.clone(), home, server, d: scratch.join("D"), key_id: String::new() };
        let ran = env.cli(&["--accept-new-host", "-c", "SHOW STATUS"], "first");
        assert!(ran.status.is_some_and(|s| s.success()), "first connection: {}", ran.stderr);

        // D: a server ran on it, took a write, and was stopped.
        add_user(&env.d, "admin", PASSWORD, "readwrite");
        let mut once = Server::start_in(env.d.clone(), 2, &[]);
        let mut cmd = Command::new(exe("velocity-cli"));
        cmd.args(["-h", "127.0.0.1", "-p", &once.addr.port().to_string(), "-U", "admin", "--password-stdin"])
            .args(["--accept-new-host", "--known-hosts"])
            .arg(scratch.join("D.known_hosts"))
            .args(["-c", "INSERT INTO kv (key, value) VALUES ('user:1', 'alice')"]);
        let ran = run_timed(cmd, Some(&format!("{PASSWORD}\n")), &scratch.join("blocks"), "d-write");
        assert!(ran.status.is_some_and(|s| s.success()), "a write to D: {}", ran.stderr);
        assert!(once.terminate().success());
        once.keep_data();
        let out = Command::new(exe("velocityd"))
            .args(["apikey", "create", "--user", "admin", "--data-dir"])
            .arg(&env.d)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let key_id = key.strip_prefix("vk_").and_then(|k| k.split('_').next()).expect("vk_<id>_…").to_owned();
        Env { key_id, ..env }
    }

    fn envs(&self, cmd: &mut Command) {
        let path = format!(
            "{}:{}",
            self.scratch.join("target/release").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("PW", PASSWORD)
            .env("VELOCITY_PASSWORD", PASSWORD)
            .env("VELOCITY_PORT", self.port().to_string());
    }

    /// velocity-cli as admin against this file's server, the password on standard input.
    fn cli(&self, args: &[&str], tag: &str) -> Ran {
        let mut cmd = Command::new(exe("velocity-cli"));
        self.envs(&mut cmd);
        cmd.env_remove("VELOCITY_PASSWORD")
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string(), "-U", "admin", "--password-stdin"])
            .args(args);
        run_timed(cmd, Some(&format!("{PASSWORD}\n")), &self.scratch.join("blocks"), tag)
    }

    fn table(&self) -> Vec<(&'static str, String)> {
        vec![
            ("D", self.d.display().to_string()),
            ("ID", self.key_id.clone()),
            ("K", self.scratch.join("K").display().to_string()),
        ]
    }
}

#[derive(Default)]
struct Report {
    /// What happened to each block and command.
    log: Vec<String>,
    failures: Vec<String>,
}

fn tag(b: &Block) -> String {
    format!("{}-{}", b.file.replace('/', "-"), b.line)
}

fn run_sql(env: &Env, b: &Block, r: &mut Report) {
    let (stmts, expected) = match split_sql(b) {
        Ok(x) => x,
        Err(e) => return r.failures.push(e),
    };
    if stmts.is_empty() {
        return r.failures.push(format!("{}: a sql block without a statement", b.at()));
    }
    let path = env.scratch.join("blocks").join(format!("{}.sql", tag(b)));
    std::fs::write(&path, b.padded()).unwrap();
    let path = path.display().to_string();
    let ran = env.cli(&["--json", "--continue-on-error", "-f", &path], &tag(b));
    let Some(status) = ran.status else {
        return r.failures.push(format!("{}: velocity-cli did not finish within {TIMEOUT:?}", b.at()));
    };
    let mut got: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut other = Vec::new();
    for l in ran.stderr.lines() {
        match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.get("line").is_some() => {
                let line = v["line"].as_u64().unwrap_or(0) as usize;
                got.insert(line, (v["error"].as_str().unwrap_or("?").into(), v["message"].to_string()));
            }
            _ => other.push(l),
        }
    }
    let before = r.failures.len();
    for (line, (code, msg)) in &got {
        match expected.get(line) {
            Some(want) if want == code => {}
            Some(want) => r.failures.push(format!("{}:{line}: failed with {code} {msg}, not {want}", b.file)),
            None => r.failures.push(format!("{}:{line}: {code} {msg}", b.file)),
        }
    }
    for (line, want) in &expected {
        if !got.contains_key(line) {
            r.failures.push(format!("{}:{line}: should fail with {want} (-- error:), but succeeded", b.file));
        }
    }
    let want_status = if got.is_empty() { 0 } else { 1 };
    if status.code() != Some(want_status) || !other.is_empty() {
        r.failures.push(format!(
            "{}: velocity-cli exited {status} ({}):\n{}",
            b.at(),
            ran.stdout.trim(),
            ran.stderr
        ));
    }
    if r.failures.len() == before {
        r.log.push(format!(
            "{}: sql: {} statement(s) ran through velocity-cli, {} failed as marked",
            b.at(),
            stmts.len(),
            expected.len()
        ));
    }
}

fn run_shell(env: &mut Option<Env>, b: &Block, r: &mut Report) {
    let mut runnable: Vec<&ShellCmd> = Vec::new();
    let cmds = shell_commands(b);
    if cmds.is_empty() {
        return r.failures.push(format!("{}: a shell block without a command", b.at()));
    }
    for c in &cmds {
        let at = format!("{}:{}", b.file, c.line);
        let (reasons, lexed) = match verdicts(c) {
            Ok(x) => x,
            Err(e) => {
                r.failures.push(format!("{at}: {e}"));
                continue;
            }
        };
        if reasons.is_empty() {
            if c.indented {
                r.failures.push(format!(
                    "{at}: goes on over an indented line without `\\`, which a shell would run as a command of its own"
                ));
            } else {
                runnable.push(c);
            }
            continue;
        }
        let errors = static_checks(&lexed);
        if errors.is_empty() {
            r.log.push(format!("{at}: sh: checked, not run: {}", reasons.join("; ")));
        } else {
            for e in errors {
                r.failures.push(format!("{at}: {e}"));
            }
        }
    }
    if runnable.is_empty() {
        return;
    }
    let env = env.get_or_insert_with(|| Env::start(&b.file));
    let table = env.table();
    let mut script = String::from("set -u -o pipefail\n");
    for c in &runnable {
        let n = c.line;
        script.push_str(&format!("printf '@@docs %d\\n' {n}; printf '@@docs %d\\n' {n} >&2\n"));
        script.push_str(&substitute(&c.text, &table, env.port()));
        script.push_str(&format!(
            "\n__docs_rc=$?; if [ $__docs_rc -ne 0 ]; then printf '@@docs-failed %d %d\\n' {n} $__docs_rc >&2; exit 1; fi\n"
        ));
    }
    let path = env.scratch.join("blocks").join(format!("{}.sh", tag(b)));
    std::fs::write(&path, &script).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&path).current_dir(&env.scratch);
    env.envs(&mut cmd);
    let ran = run_timed(cmd, None, &env.scratch.join("blocks"), &tag(b));
    // Each command's output, by the markers.
    let chunks = |s: &str| -> BTreeMap<usize, String> {
        let mut m: BTreeMap<usize, String> = BTreeMap::new();
        let mut cur = 0;
        for l in s.lines() {
            if let Some(n) = l.strip_prefix("@@docs ").and_then(|n| n.parse().ok()) {
                cur = n;
            } else if !l.starts_with("@@docs-failed ") {
                let e = m.entry(cur).or_default();
                e.push_str(l);
                e.push('\n');
            }
        }
        m
    };
    let (outs, errs) = (chunks(&ran.stdout), chunks(&ran.stderr));
    let started: Vec<usize> =
        ran.stderr.lines().filter_map(|l| l.strip_prefix("@@docs ").and_then(|n| n.parse().ok())).collect();
    let ok = ran.status.is_some_and(|s| s.success()) && started.len() == runnable.len();
    if ok {
        for c in &runnable {
            r.log.push(format!("{}:{}: sh: ran", b.file, c.line));
        }
        return;
    }
    let failed = started.last().copied().unwrap_or(runnable[0].line);
    let why = match ran.status {
        None => format!("did not finish within {TIMEOUT:?}"),
        Some(_) => ran
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("@@docs-failed "))
            .map(|s| format!("exited {}", s.split(' ').nth(1).unwrap_or("?")))
            .unwrap_or_else(|| "stopped the script (an unset variable?)".into()),
    };
    let text = runnable.iter().find(|c| c.line == failed).map(|c| c.text.as_str()).unwrap_or("");
    r.failures.push(format!(
        "{}:{failed}: `{text}` {why}\n--- stdout (end):\n{}\n--- stderr (end):\n{}",
        b.file,
        last_lines(outs.get(&failed).map_or("", |s| s), 15),
        last_lines(errs.get(&failed).map_or("", |s| s), 15),
    ));
    for c in runnable.iter().filter(|c| c.line < failed) {
        r.log.push(format!("{}:{}: sh: ran", b.file, c.line));
    }
}

/// Compile a python block, or parse a js block; `ext` the file's extension.
fn check_code(scratch: &Path, b: &Block, lang: Lang, r: &mut Report) {
    let ext = if lang == Lang::Python { "py" } else { "mjs" };
    let path = scratch.join(format!("{}.{ext}", tag(b)));
    std::fs::write(&path, b.padded()).unwrap();
    let result = match lang {
        Lang::Python => py_compile(&path, &b.file).map(|()| "compiled by python3"),
        _ => match Command::new("node").arg("--check").arg(&path).output() {
            Ok(o) if o.status.success() => Ok("parsed by node --check (an ES module)"),
            Ok(o) => Err(last_lines(&String::from_utf8_lossy(&o.stderr), 8)),
            Err(e) => Err(format!("node: {e} (scripts/test.sh installs Node.js before cargo test)")),
        },
    };
    match result {
        Ok(what) => r.log.push(format!("{}: {}: {what}", b.at(), b.info)),
        Err(e) => r.failures.push(format!("{}: does not parse:\n{e}", b.at())),
    }
}

/// One JSON value, or one on each non-blank line.
fn check_json(b: &Block, r: &mut Report) {
    let whole = b.body.join("\n");
    if serde_json::from_str::<serde_json::Value>(&whole).is_ok() {
        return r.log.push(format!("{}: json: parsed", b.at()));
    }
    for (i, l) in b.body.iter().enumerate() {
        if let (false, Err(e)) = (l.trim().is_empty(), serde_json::from_str::<serde_json::Value>(l)) {
            return r.failures.push(format!("{}:{}: not JSON (nor JSON lines): {e}", b.file, b.line_of(i)));
        }
    }
    r.log.push(format!("{}: json: parsed (JSON lines)", b.at()));
}

fn run_file(file: &str) -> Report {
    let mut r = Report::default();
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let bs = match blocks(file, &text) {
        Ok(b) => b,
        Err(e) => {
            r.failures.push(e);
            return r;
        }
    };
    let code_dir = temp_dir(&format!("docs-code-{}", file.replace('/', "-")));
    let mut env: Option<Env> = None;
    for b in &bs {
        match lang(&b.info) {
            Err(e) => r.failures.push(format!("{}: {e}", b.at())),
            Ok(Lang::Text) => r.log.push(format!("{}: text: not run", b.at())),
            Ok(Lang::Unchecked(why)) => r.log.push(format!("{}: {}: not checked: {why}", b.at(), b.info)),
            Ok(l @ (Lang::Python | Lang::Js)) => check_code(&code_dir, b, l, &mut r),
            Ok(Lang::Json) => check_json(b, &mut r),
            Ok(Lang::Sql) => {
                let env = env.get_or_insert_with(|| Env::start(file));
                run_sql(env, b, &mut r);
            }
            Ok(Lang::Shell) => run_shell(&mut env, b, &mut r),
        }
    }
    if bs.is_empty() {
        r.log.push(format!("{file}: no code blocks"));
    }
    let _ = std::fs::remove_dir_all(&code_dir);
    if let Some(env) = env {
        let scratch = env.scratch.clone();
        drop(env);
        if r.failures.is_empty() {
            let _ = std::fs::remove_dir_all(&scratch);
        } else {
            r.log.push(format!("{file}: its scratch directory is kept: {}", scratch.display()));
        }
    }
    r
}

#[test]
fn every_block_of_the_docs_runs_as_written() {
    let started = Instant::now();
    let files = doc_files();
    let reports: Vec<(String, Report)> = std::thread::scope(|s| {
        let handles: Vec<_> = files.iter().map(|f| (f.clone(), s.spawn(move || run_file(f)))).collect();
        handles
            .into_iter()
            .map(|(f, h)| {
                let r = h.join().unwrap_or_else(|_| panic!("{f}: the test panicked"));
                (f, r)
            })
            .collect()
    });
    let mut failures = Vec::new();
    for (_, r) in &reports {
        let mut log = r.log.clone();
        // By line: a block's commands that were checked are logged before those that ran.
        let line = |l: &str| l.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        log.sort_by_key(|l| line(l));
        for l in &log {
            println!("{l}");
        }
        failures.extend(r.failures.iter().cloned());
    }
    println!("{} files in {:.1} s", files.len(), started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} block(s) of the docs do not run as written:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The rules themselves

fn block(info: &str, body: &str) -> Block {
    Block {
        file: "X.md".into(),
        line: 10,
        info: info.into(),
        body: body.lines().map(str::to_owned).collect(),
    }
}

#[test]
fn fences_are_found_with_their_lines_and_info_strings() {
    let md =
        "text\n```sql\nSELECT 1;\n```\n\n  ~~~~ sh\n  echo ``` x\n  ~~~~\n``not a fence``\n````\n```\n````\n";
    let b = blocks("X.md", md).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].line, b[0].info.as_str(), b[0].body.clone()), (2, "sql", vec!["SELECT 1;".to_owned()]));
    assert_eq!((b[1].line, b[1].info.as_str(), b[1].body.clone()), (6, "sh", vec!["echo ``` x".to_owned()]));
    assert_eq!((b[2].line, b[2].info.as_str(), b[2].body.clone()), (10, "", vec!["```".to_owned()]));
    assert!(blocks("X.md", "```sh\nnever closed\n").unwrap_err().contains("X.md:1"));
    assert!(lang("").is_err() && lang("sh synopsis").is_err() && lang("bash") == Ok(Lang::Shell));
}

#[test]
fn sql_statements_and_their_expected_errors() {
    let b = block(
        "sql",
        "SELECT 'a;b''c' FROM kv; -- x\n\\x\nSELECT /* ; /* ; */ */\n  1;  -- error: KEY_NOT_FOUND\nSELECT 2",
    );
    let (stmts, expected) = split_sql(&b).unwrap();
    assert_eq!(
        stmts,
        vec![Stmt { start: 11, end: 11 }, Stmt { start: 13, end: 14 }, Stmt { start: 15, end: 15 }]
    );
    assert_eq!(expected, BTreeMap::from([(13, "KEY_NOT_FOUND".to_owned())]));
    assert!(split_sql(&block("sql", "SELECT 1;\n-- error: X")).is_err());
}

#[test]
fn shell_lines_are_split_and_classified_as_the_header_says() {
    let b = block(
        "sh",
        "# a comment\nvelocityd --data-dir D --cores 4 [--cpu-list 0-3]   # serve\n      [--max-connections N]\n\
         echo -n \"$PW\" | target/release/velocity-cli -u admin \\\n    -c \"SELECT 1 # not a comment\"\n\
         G=$(awk '/generation/ {print $2}' D/wal/CURRENT)\nscripts/test.sh\n",
    );
    let cmds = shell_commands(&b);
    assert_eq!(
        cmds.iter().map(|c| (c.line, c.indented)).collect::<Vec<_>>(),
        [(12, true), (14, false), (16, false), (17, false)]
    );
    let run = |i: usize| verdicts(&cmds[i]).unwrap().0;
    assert!(
        run(0).iter().any(|r| r.contains("would serve")) && run(0).iter().any(|r| r.contains("synopsis"))
    );
    assert!(run(1).is_empty());
    assert!(run(2).is_empty());
    assert!(run(3)[0].contains("script of the repository"));
    let lexed = lex(&cmds[1].text).unwrap();
    assert_eq!(lexed.simple.len(), 2);
    assert_eq!(lexed.simple[1].words.last().unwrap().text, "SELECT 1 # not a comment");
    let lexed = lex(&cmds[2].text).unwrap();
    assert_eq!(program(&lexed.simple[0]).unwrap().0, "awk");
    assert!(verdicts(&ShellCmd { line: 1, text: "velocityd --port 7411 &".into(), indented: false })
        .unwrap()
        .0[0]
        .contains("background"));
    assert!(verdicts(&ShellCmd { line: 1, text: "velocityd keygen --out /etc/k".into(), indented: false })
        .unwrap()
        .0[0]
        .contains("absolute path"));
    assert!(verdicts(&ShellCmd { line: 1, text: "frobnicate".into(), indented: false }).is_err());
    let long = ShellCmd { line: 1, text: "velocity-bench --duration-s 60".into(), indented: false };
    assert!(verdicts(&long).unwrap().0[0].contains("60 s"));
}

#[test]
fn checked_commands_catch_unknown_flags_and_values() {
    let check = |t: &str| static_checks(&lex(t).unwrap());
    assert!(check("velocityd ... [--durability sync|periodic|none] [--audit on|off] --cores 4").is_empty());
    assert!(check("velocityd user add NAME --role readonly|readwrite --password-stdin").is_empty());
    assert_eq!(check("velocityd --no-such-flag --durability fast|sync").len(), 2);
    assert_eq!(check("velocityd keygen --out /etc/k --force").len(), 1);
    assert!(check("taskset -c 1 target/release/velocity-bench -c 50 -P 16 --workload get").is_empty());
    assert!(check("scripts/quickstart.sh").is_empty());
    assert_eq!(check("scripts/no-such-script.sh").len(), 1);
}

#[test]
fn placeholders_are_replaced_only_where_they_stand_unquoted() {
    let table = vec![("D", "/s/D".to_owned()), ("ID", "ab12".to_owned())];
    assert_eq!(
        substitute(
            "tar -C D -cf b.tar D/wal \"D/x\" 'ID' ID --listen 127.0.0.1:7411 -p 7411 # D ID",
            &table,
            5000
        ),
        "tar -C /s/D -cf b.tar /s/D/wal \"D/x\" 'ID' ab12 --listen 127.0.0.1:5000 -p 5000 # D ID"
    );
    assert_eq!(substitute("DD D2 x/D 74110", &table, 5000), "DD D2 x/D 74110");
}
