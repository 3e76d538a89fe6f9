//! velocity-cli: an interactive shell and a one-shot command runner for Velocity.

use clap::Parser;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Instant;
use velocity::client::trust::TrustArgs;
use velocity::client::{Client, ClientError, Credentials};
use velocity::protocol::{ResultSet, Value};

#[derive(Parser)]
#[command(name = "velocity-cli", version, about = "Velocity shell: SQL over the kv table")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, short = 'p', default_value_t = 7411)]
    port: u16,
    /// User name.
    #[arg(long, short = 'u', default_value = "admin")]
    user: String,
    /// Read the password from standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Run these statements (separated by `;`) and exit; non-zero status on any error.
    #[arg(long, short = 'c')]
    command: Option<String>,
    /// Print results as JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trust: TrustArgs,
}

/// First contact with an unknown server: ask on the terminal, as ssh does.
fn ask_on_tty(host: &str, fp: &str) -> bool {
    let Ok(mut tty) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty") else {
        return false;
    };
    let _ = write!(
        tty,
        "The authenticity of server '{host}' can't be established.\nIts key fingerprint is {fp}.\n\
         Are you sure you want to continue connecting (yes/no)? "
    );
    let mut answer = String::new();
    let mut byte = [0u8; 1];
    while tty.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        answer.push(byte[0] as char);
    }
    answer.trim().eq_ignore_ascii_case("yes")
}

fn read_password_prompt() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("no terminal to prompt for a password: use --password-stdin".into());
    }
    eprint!("password: ");
    let _ = std::io::stderr().flush();
    // Echo off while the password is typed.
    // SAFETY: termios calls on fd 0 with a local struct, restored below.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let had = unsafe { libc::tcgetattr(0, &mut term) } == 0;
    if had {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    if had {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
    }
    eprintln!();
    r.map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Widest a table cell gets, in terminal columns: a value may be megabytes, a line of the
/// table should still fit a screen or two.
const CELL_COLUMNS_MAX: usize = 100;

/// Terminal columns `c` takes: 2 for the East Asian wide and fullwidth blocks, else 1. An
/// approximation (no width tables among our dependencies) that errs on the wide side for the
/// common wide scripts, so that a line is never longer than its computed width.
fn char_width(c: char) -> usize {
    match c as u32 {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3040..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE10..=0xFE19
        | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x2FFFD
        | 0x30000..=0x3FFFD => 2,
        _ => 1,
    }
}

fn text_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` as one table cell: whole if it fits CELL_COLUMNS_MAX, else cut with a marker giving
/// the size of the whole value (`bytes`), so that a cut value is never mistaken for a short one.
fn clip(s: &str, bytes: usize) -> String {
    let mut width = 0;
    for (i, c) in s.char_indices() {
        width += char_width(c);
        if width > CELL_COLUMNS_MAX {
            let mark = format!("… ({bytes} bytes)");
            let room = CELL_COLUMNS_MAX - text_width(&mark);
            let mut cut = 0;
            let mut kept = 0;
            for (j, c) in s[..i].char_indices() {
                kept += char_width(c);
                if kept > room {
                    break;
                }
                cut = j + c.len_utf8();
            }
            return format!("{}{mark}", &s[..cut]);
        }
    }
    s.to_owned()
}

/// Text as shown in a table: printable UTF-8 as is, anything else (control characters such
/// as ESC or NUL, invalid UTF-8) as an X'..' literal, so that no escape sequence reaches the
/// terminal; then cut to one cell.
fn cell_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => clip(s, b.len()),
        _ => clip(&velocity::sql::quote_literal(b), b.len()),
    }
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => cell_bytes(b),
    }
}

fn cell_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(_) => {
                serde_json::json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
            }
        },
    }
}

fn print_table(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "OK, {} row{} affected", rs.affected, if rs.affected == 1 { "" } else { "s" });
    }
    // Column names come from the server too: the same rules as values.
    let header: Vec<String> = rs.columns.iter().map(|c| cell_bytes(c.as_bytes())).collect();
    let cells: Vec<Vec<String>> = rs.rows.iter().map(|r| r.iter().map(cell_text).collect()).collect();
    let mut w: Vec<usize> = header.iter().map(|c| text_width(c)).collect();
    for r in &cells {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(text_width(c));
        }
    }
    // Padded by hand, not with `{v:<w$}`: a format width is at most u16::MAX (wider panics)
    // and counts chars, not terminal columns.
    let line = |out: &mut dyn Write, vals: &[String]| -> std::io::Result<()> {
        let parts: Vec<String> =
            vals.iter().zip(&w).map(|(v, w)| format!(" {v}{} ", " ".repeat(w - text_width(v)))).collect();
        writeln!(out, "{}", parts.join("|").trim_end())
    };
    line(out, &header)?;
    writeln!(out, "{}", w.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"))?;
    for r in &cells {
        line(out, r)?;
    }
    writeln!(out, "({} row{})", cells.len(), if cells.len() == 1 { "" } else { "s" })
}

fn print_json(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "{}", serde_json::json!({ "affected": rs.affected }));
    }
    for r in &rs.rows {
        let obj: serde_json::Map<String, serde_json::Value> =
            rs.columns.iter().cloned().zip(r.iter().map(cell_json)).collect();
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    Ok(())
}

/// Split on `;` outside quotes, so `-c "a; b"` runs two statements.
fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    for ch in text.chars() {
        match ch {
            '\'' => {
                in_quote = !in_quote;
                cur.push(ch);
            }
            ';' if !in_quote => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// Shell shortcuts: `\stats`, `\status`, `\q`.
fn expand(stmt: &str) -> Option<String> {
    match stmt.trim() {
        "\\stats" | "stats" => Some("SHOW STATS".into()),
        "\\status" | "status" => Some("SHOW STATUS".into()),
        _ => None,
    }
}

struct Shell {
    client: Client,
    json: bool,
    timing: bool,
}

impl Shell {
    fn run(&mut self, stmt: &str) -> Result<(), ClientError> {
        let sql = expand(stmt).unwrap_or_else(|| stmt.to_owned());
        let t = Instant::now();
        let rs = self.client.execute(&sql)?;
        let elapsed = t.elapsed();
        let mut out = std::io::stdout().lock();
        if self.json { print_json(&rs, &mut out) } else { print_table(&rs, &mut out) }
            .map_err(ClientError::Io)?;
        if self.timing {
            let _ = writeln!(out, "Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
        }
        Ok(())
    }
}

fn repl(shell: &mut Shell) -> ExitCode {
    let mut rl = match rustyline::DefaultEditor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("velocity-cli: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".velocity_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    // Saved as each entry is added, before it runs: a session that ends by an error return,
    // a panic or a kill keeps what was typed.
    let save = |rl: &mut rustyline::DefaultEditor| {
        if let Some(h) = &history {
            let _ = rl.save_history(h);
        }
    };
    println!("Connected. End statements with ';'. \\stats, \\status, \\q to quit.");
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { "velocity> " } else { "      ... " };
        match rl.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty() && (t == "\\q" || t == "quit" || t == "exit") {
                    break;
                }
                if buf.is_empty() && expand(t).is_some() {
                    let _ = rl.add_history_entry(t);
                    save(&mut rl);
                    if let Err(e) = shell.run(t) {
                        eprintln!("ERROR: {e}");
                    }
                    continue;
                }
                buf.push_str(&line);
                buf.push('\n');
                if !t.ends_with(';') {
                    continue;
                }
                let text = std::mem::take(&mut buf);
                let _ = rl.add_history_entry(text.trim());
                save(&mut rl);
                for stmt in split_statements(&text) {
                    if let Err(e) = shell.run(&stmt) {
                        eprintln!("ERROR: {e}");
                        if matches!(e, ClientError::Io(_) | ClientError::Disconnected { .. }) {
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => buf.clear(),
            Err(_) => break,
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let password = if cli.password_stdin {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("velocity-cli: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Ok(p) = std::env::var("VELOCITY_PASSWORD") {
        p
    } else {
        match read_password_prompt() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("velocity-cli: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let creds = Credentials::Password { user: cli.user.clone(), password };
    let tty = std::fs::File::open("/dev/tty").is_ok();
    let ask: Option<Box<dyn Fn(&str, &str) -> bool>> = if tty { Some(Box::new(ask_on_tty)) } else { None };
    let opts = cli.trust.options(&cli.host, cli.port, ask);
    let client = match Client::connect(&opts, &creds) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("velocity-cli: cannot connect to {}:{}: {e}", cli.host, cli.port);
            return ExitCode::FAILURE;
        }
    };
    let mut shell = Shell { client, json: cli.json, timing: cli.command.is_none() };
    match cli.command {
        Some(cmd) => {
            for stmt in split_statements(&cmd) {
                if let Err(e) = shell.run(&stmt) {
                    eprintln!("ERROR: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        None => repl(&mut shell),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Long values are a short random pattern repeated, so that a case costs about what it
    /// prints; short ones are fully random.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..300),
            3 => prop::collection::vec(any::<char>(), 0..300)
                .prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
            1 => (prop::collection::vec(any::<u8>(), 1..8), 0usize..200_000)
                .prop_map(|(p, n)| p.iter().cycle().take(n).copied().collect()),
            1 => (any::<char>(), 0usize..50_000).prop_map(|(c, n)| c.to_string().repeat(n).into_bytes()),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(Value::Int),
            6 => bytes().prop_map(Value::Bytes),
        ]
    }

    /// Any result set the decoder can hand over: rows as wide as the columns, no rows without
    /// columns; names up to the u16 length limit.
    fn result_set() -> impl Strategy<Value = ResultSet> {
        let name = prop_oneof![
            6 => prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect::<String>()),
            1 => (any::<char>(), 0usize..16_000).prop_map(|(c, n)| c.to_string().repeat(n)),
        ];
        (0usize..12).prop_flat_map(move |n| {
            let rows = if n == 0 { 0..1 } else { 0..30 };
            (
                prop::collection::vec(name.clone(), n),
                prop::collection::vec(prop::collection::vec(value(), n), rows),
                any::<u64>(),
            )
                .prop_map(|(columns, rows, affected)| ResultSet { columns, rows, affected })
        })
    }

    /// What a JSON cell decodes back to: the value's bytes (or int, or NULL), whole.
    fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap()),
            serde_json::Value::String(s) => Value::Bytes(s.clone().into_bytes()),
            serde_json::Value::Object(o) => {
                let hex = o["hex"].as_str().unwrap();
                Value::Bytes(
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect(),
                )
            }
            other => panic!("unexpected JSON cell {other}"),
        }
    }

    proptest! {
        #[test]
        fn printers_take_any_result_set(rs in result_set()) {
            let n = rs.columns.len();
            // Each cell: the whole rendering when it fits, else a prefix of it and the marker.
            for v in rs.rows.iter().flatten() {
                let t = cell_text(v);
                prop_assert!(text_width(&t) <= CELL_COLUMNS_MAX, "{}", t);
                if let Value::Bytes(b) = v {
                    let whole = match std::str::from_utf8(b) {
                        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
                        _ => velocity::sql::quote_literal(b),
                    };
                    if text_width(&whole) <= CELL_COLUMNS_MAX {
                        prop_assert_eq!(&t, &whole);
                    } else {
                        let kept = t.strip_suffix(&format!("… ({} bytes)", b.len()));
                        prop_assert!(kept.is_some_and(|k| whole.starts_with(k)), "{}", t);
                    }
                }
            }

            let mut out = Vec::new();
            print_table(&rs, &mut out).unwrap();
            // Printable text only: nothing the terminal would take as a command.
            let out = String::from_utf8(out).unwrap();
            prop_assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{:?}", out);
            let lines: Vec<&str> = out.lines().collect();
            prop_assert_eq!(lines.len(), if n == 0 { 1 } else { rs.rows.len() + 3 });
            let bound = (n * (CELL_COLUMNS_MAX + 3)).max(40);
            for l in &lines {
                prop_assert!(text_width(l) <= bound, "{} columns > {}", text_width(l), bound);
            }

            let mut out = Vec::new();
            print_json(&rs, &mut out).unwrap();
            let lines: Vec<serde_json::Value> =
                String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if n == 0 {
                prop_assert_eq!(&lines, &vec![serde_json::json!({ "affected": rs.affected })]);
            } else {
                prop_assert_eq!(lines.len(), rs.rows.len());
                for (row, j) in rs.rows.iter().zip(&lines) {
                    // A repeated column name keeps its last value.
                    for (i, (c, v)) in rs.columns.iter().zip(row).enumerate() {
                        if !rs.columns[i + 1..].contains(c) {
                            prop_assert_eq!(&from_json(&j[c.as_str()]), v);
                        }
                    }
                }
            }
        }
    }
}
