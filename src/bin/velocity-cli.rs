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

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_owned(),
            _ => velocity::sql::quote_literal(b),
        },
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
    let cells: Vec<Vec<String>> = rs.rows.iter().map(|r| r.iter().map(cell_text).collect()).collect();
    let mut w: Vec<usize> = rs.columns.iter().map(|c| c.chars().count()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, vals: &[String]| -> std::io::Result<()> {
        let parts: Vec<String> = vals.iter().zip(&w).map(|(v, w)| format!(" {v:<w$} ")).collect();
        writeln!(out, "{}", parts.join("|").trim_end())
    };
    line(out, &rs.columns)?;
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
    if let Some(h) = &history {
        let _ = rl.save_history(h);
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
