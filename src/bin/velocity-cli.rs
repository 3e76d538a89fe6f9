//! velocity-cli: an interactive shell, a script runner and a one-shot command runner for
//! Velocity, with the habits of psql and redis-cli (-h -p -U, VELOCITY_* variables, \? and \h,
//! -f and pipes).

/// A line on stderr; a closed stderr is ignored rather than a panic (as `eprintln!` would).
macro_rules! warn {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[path = "velocity-cli/help.rs"]
mod help;
#[path = "velocity-cli/print.rs"]
mod print;
#[path = "velocity-cli/repl.rs"]
mod repl;
#[path = "velocity-cli/shell.rs"]
mod shell;
#[path = "velocity-cli/split.rs"]
mod split;

use clap::Parser;
use shell::{Expanded, Format, Problem, Shell};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use velocity::client::trust::TrustArgs;
use velocity::client::{Client, Credentials};

const AFTER_HELP: &str = "\
Environment (a flag wins over its variable):
  VELOCITY_HOST, VELOCITY_PORT, VELOCITY_USER   where to connect and as whom
  VELOCITY_PASSWORD                             the password (else it is asked for on the terminal)
  VELOCITY_API_KEY                              log in with this API key, unless -U or --password-stdin is given

Input: with -c, those statements; with -f, that file (- for standard input); else the
interactive shell on a terminal, or the statements piped to standard input. A script stops at
its first error with exit status 1, unless --continue-on-error.

In the shell: \\? lists the commands, \\h the statements, \\q quits.

Examples:
  velocity-cli -h db1 -U alice
  velocity-cli -c \"SELECT value FROM kv WHERE key = 'user:1'\"
  VELOCITY_PASSWORD=... velocity-cli --csv -f report.sql > report.csv
  velocity-cli < dump.sql";

#[derive(Parser)]
#[command(
    name = "velocity-cli",
    version,
    about = "Velocity shell: SQL over the kv table",
    disable_help_flag = true,
    after_help = AFTER_HELP
)]
struct Cli {
    /// Print this help.
    #[arg(short = '?', long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Server host [env: VELOCITY_HOST] [default: 127.0.0.1].
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Server port [env: VELOCITY_PORT] [default: 7411].
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// User name [env: VELOCITY_USER] [default: admin].
    #[arg(short = 'U', long, visible_short_alias = 'u', visible_alias = "username")]
    user: Option<String>,
    /// Read the password from the first line of standard input instead of asking.
    #[arg(long)]
    password_stdin: bool,
    /// Log in with an API key read from the first line of standard input [env: VELOCITY_API_KEY].
    #[arg(long, conflicts_with_all = ["password_stdin", "user"])]
    api_key_stdin: bool,
    /// Run these statements (separated by `;`; meta-commands on lines of their own) and exit.
    #[arg(short = 'c', long, conflicts_with = "file")]
    command: Option<String>,
    /// Run the statements of this file (- for standard input) and exit.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// In a script, go on after a failed statement (the exit status is still 1).
    #[arg(long)]
    continue_on_error: bool,
    /// Print results as JSON lines, and errors as JSON objects on stderr.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print results as CSV: a header line, then a line per row.
    #[arg(long)]
    csv: bool,
    /// Expanded display: a line per column, long values whole (\x in the shell).
    #[arg(short = 'x', long)]
    expanded: bool,
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

/// Ask for the password on the terminal (not standard input, which may be a script), with
/// echo off while it is typed.
fn read_password_prompt() -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| {
        "no terminal to ask for a password: set VELOCITY_PASSWORD, use --password-stdin, \
         or log in with an API key (VELOCITY_API_KEY, --api-key-stdin)"
            .to_string()
    })?;
    let fd = tty.as_raw_fd();
    // Echo off before the prompt shows: nothing typed after it can be echoed.
    // SAFETY: termios calls on the terminal's fd with a local struct, restored below.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let had = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    if had {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let _ = tty.write_all(b"password: ");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let r = loop {
        match tty.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            Ok(_) => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    if had {
        // SAFETY: as above: the settings read before.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    let _ = tty.write_all(b"\n");
    r.map_err(|e| format!("cannot read the password: {e}"))?;
    let line = String::from_utf8(line).map_err(|_| "the password is not UTF-8".to_string())?;
    Ok(line.trim_end_matches('\r').to_owned())
}

/// The first line of standard input: the rest stays there (a script may follow).
fn read_stdin_line(what: &str) -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).map_err(|e| format!("cannot read the {what}: {e}"))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// A variable that is set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where to connect, whom as, and how the session prints.
struct Settings {
    host: String,
    port: u16,
    creds: Credentials,
    format: Format,
}

fn settings(cli: &Cli) -> Result<Settings, String> {
    let host = cli.host.clone().or_else(|| env("VELOCITY_HOST")).unwrap_or_else(|| "127.0.0.1".into());
    let port = match (cli.port, env("VELOCITY_PORT")) {
        (Some(p), _) => p,
        (None, Some(v)) => match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("VELOCITY_PORT={v:?} is not a port number (1 to 65535)")),
        },
        (None, None) => 7411,
    };
    let user = cli.user.clone().or_else(|| env("VELOCITY_USER")).unwrap_or_else(|| "admin".into());
    let creds = if cli.api_key_stdin {
        let key = read_stdin_line("API key")?;
        if key.is_empty() {
            return Err("no API key on standard input".into());
        }
        Credentials::ApiKey(key)
    } else if cli.password_stdin {
        Credentials::Password { user, password: read_stdin_line("password")? }
    } else if let (None, Some(key)) = (&cli.user, env("VELOCITY_API_KEY")) {
        Credentials::ApiKey(key)
    } else if let Some(password) = env("VELOCITY_PASSWORD") {
        Credentials::Password { user, password }
    } else {
        Credentials::Password { user, password: read_password_prompt()? }
    };
    let format = if cli.json {
        Format::Json
    } else if cli.csv {
        Format::Csv
    } else {
        Format::Table
    };
    Ok(Settings { host, port, creds, format })
}

/// `\conninfo`, and the banner's first line.
fn describe(client: &Client, s: &Settings, label: &str) -> (String, String) {
    let info = client.server_info();
    let server = print::safe_text(&info.server);
    let tls = info.flags & 1 != 0;
    let who = match &s.creds {
        Credentials::ApiKey(_) => "with an API key".to_string(),
        Credentials::Password { user, .. } | Credentials::Derived { user, .. } => {
            format!("as user \"{}\"", print::safe_text(user))
        }
    };
    let transport = if tls { "TLS 1.3" } else { "plain TCP, not encrypted" };
    let fp = velocity::server::datadir::fingerprint_string(&info.fingerprint);
    let conninfo = format!(
        "You are connected to {server} at {label} {who}, over {transport}.\n\
         Server key {fp}; {} shard{}; statements up to {} bytes.",
        info.shards,
        if info.shards == 1 { "" } else { "s" },
        info.max_payload
    );
    let banner = format!(
        "velocity-cli {}: connected to {server} at {label} ({}).\nType \"help\" for help, \\q to quit.\n",
        env!("CARGO_PKG_VERSION"),
        if tls { "TLS" } else { "plain TCP" }
    );
    (conninfo, banner)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fail = |p: Problem| {
        if cli.json {
            warn!("{}", p.json(None, None));
        } else {
            warn!("velocity-cli: {}", print::safe_text(&p.message));
        }
        ExitCode::FAILURE
    };
    let s = match settings(&cli) {
        Ok(s) => s,
        Err(e) => return fail(Problem::usage(e)),
    };
    // The script, opened before connecting: a wrong file name costs no login.
    let file: Option<Box<dyn std::io::BufRead>> = match &cli.file {
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdin().lock())),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Some(Box::new(std::io::BufReader::new(f))),
            Err(e) => return fail(Problem::usage(format!("cannot open {}: {e}", p.display()))),
        },
        None => None,
    };
    let tty = std::fs::File::open("/dev/tty").is_ok();
    let ask = tty.then(|| Box::new(ask_on_tty) as Box<dyn Fn(&str, &str) -> bool>);
    let opts = cli.trust.options(&s.host, s.port, ask);
    let label = opts.host_label();
    let client = match Client::connect(&opts, &s.creds) {
        Ok(c) => c,
        Err(e) => return fail(Problem::of(&e).context(&format!("cannot connect to {label}"))),
    };
    let (conninfo, banner) = describe(&client, &s, &label);
    let mut shell = Shell::new(client, s.format, conninfo);
    if cli.expanded {
        shell.expanded = Expanded::On;
    }
    shell.stop_on_error = !cli.continue_on_error;
    if let Some(cmd) = &cli.command {
        return shell.script(&mut std::io::Cursor::new(cmd.as_bytes()));
    }
    if let Some(mut input) = file {
        shell.source = Some(match &cli.file {
            Some(p) if p.as_os_str() != "-" => p.display().to_string(),
            _ => "<stdin>".into(),
        });
        return shell.script(&mut input);
    }
    if std::io::stdin().is_terminal() {
        shell.stop_on_error = false;
        shell.timing = true;
        return repl::run(&mut shell, &banner);
    }
    shell.source = Some("<stdin>".into());
    shell.script(&mut std::io::stdin().lock())
}
