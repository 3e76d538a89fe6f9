//! What the shell says about itself: `help`, `\?`, `\h [STATEMENT]`, and what a Redis command
//! typed at the prompt is in SQL.

use velocity::limits::{INSERT_ROWS_MAX, IN_LIST_KEYS_MAX, TTL_SECONDS_MAX};
use velocity::sql::quote_literal as q;

/// `help` typed at the prompt, as psql answers it.
pub fn intro() -> String {
    format!(
        "You are using velocity-cli {}, the command-line interface to Velocity.\n\
         Type:  \\? for help with velocity-cli commands\n       \
         \\h for help with SQL statements (\\h SELECT, \\h INSERT, ...)\n       \
         ; at the end of a statement to run it (or \\g)\n       \
         \\q to quit\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The meta-commands, for `\?` and for completion: (command, arguments, what it does).
pub const META: &[(&str, &str, &str)] = &[
    ("\\?", "", "this list of velocity-cli commands"),
    ("\\h", "[STATEMENT]", "grammar and examples of a statement; alone, the list (also \\help)"),
    ("\\q", "", "quit (also quit, exit, Ctrl-D)"),
    ("\\g", "", "run the statement typed so far, as a closing ';' does"),
    ("\\p", "", "show the statement typed so far"),
    ("\\r", "", "forget the statement typed so far (also Ctrl-C)"),
    (
        "\\x",
        "[on|off|auto]",
        "expanded display: a line per column, values whole; auto: when the table would not fit",
    ),
    ("\\timing", "[on|off]", "show how long each statement took"),
    ("\\conninfo", "", "the server, address, user and transport of this session"),
    ("\\stats", "", "SHOW STATS: operation counts, latency percentiles, memory"),
    ("\\status", "", "SHOW STATUS: version, uptime, shards, durability, your user and role"),
];

/// `\?`.
pub fn meta_list() -> String {
    let mut out = String::from("velocity-cli commands (a line starting with \\):\n");
    for (cmd, args, what) in META {
        let head = if args.is_empty() { cmd.to_string() } else { format!("{cmd} {args}") };
        out.push_str(&format!("  {head:<22} {what}\n"));
    }
    out.push_str(
        "\nSQL statements end with ';' and may span lines; -- starts a comment to the end of the\n\
         line, /* ... */ a comment that may span lines. Tab completes keywords and commands.\n\
         Up and down arrows recall earlier statements (kept in ~/.velocity_history).\n",
    );
    out
}

/// One statement's help.
pub struct Topic {
    pub name: &'static str,
    pub what: &'static str,
    pub syntax: String,
    pub notes: String,
    pub examples: &'static [&'static str],
}

fn literal_and_condition() -> String {
    format!(
        "condition:  key = literal\n            \
         key IN ( literal [, ...] )                  (at most {IN_LIST_KEYS_MAX} keys)\n            \
         key LIKE 'pattern'                          (% any run, _ one byte, \\ escapes)\n            \
         key op literal [ AND key op literal ]       (op: <  <=  >  >=)\n            \
         key BETWEEN literal AND literal\n\
         literal:    'text' (a quote inside is doubled: 'it''s')  |  X'68656c6c6f' (bytes, in hex)"
    )
}

pub fn topics() -> Vec<Topic> {
    vec![
        Topic {
            name: "SELECT",
            what: "read keys, values and TTLs",
            syntax: format!(
                "SELECT columns FROM kv [ WHERE condition ] [ ORDER BY key [ ASC | DESC ] ] [ LIMIT count ]\n\n\
                 columns:    column [, ...]  |  *  |  COUNT(*)         (column: key, value or ttl, each once)\n{}",
                literal_and_condition()
            ),
            notes: "Reads come back in key order (bytewise). A point read (key = literal) of a missing key\n\
                    fails with KEY_NOT_FOUND; every other read returns the rows found, maybe none. ttl is\n\
                    the seconds left, or NULL for a key that does not expire. A result too large for one\n\
                    reply is refused: page with WHERE key > 'last key seen' ... LIMIT n."
                .into(),
            examples: &[
                "SELECT value FROM kv WHERE key = 'user:1';",
                "SELECT key, value, ttl FROM kv WHERE key LIKE 'user:%' ORDER BY key DESC LIMIT 10;",
                "SELECT key, value FROM kv WHERE key IN ('user:1', 'user:2');",
                "SELECT COUNT(*) FROM kv WHERE key BETWEEN 'user:' AND 'user:~';",
                "SELECT key FROM kv WHERE key > 'user:1' LIMIT 100;",
            ],
        },
        Topic {
            name: "INSERT",
            what: "set keys to values (insert or overwrite)",
            syntax: "INSERT INTO kv (key, value [, ttl]) VALUES (literal, literal [, seconds | NULL]) [, ...]\n\
                     \x20   [ON CONFLICT [(key)] DO NOTHING\n\
                     \x20    | ON CONFLICT (key) DO UPDATE SET value = new [, ttl = seconds | NULL | excluded.ttl]]\n\
                     \x20   [RETURNING * | returned [, ...]]\n\n\
                     new:        literal  |  excluded.value  |  value + n  |  value - n   (value ± n: one row only)\n\
                     returned:   key, value, ttl (as written), old.value, old.ttl (as it was, or NULL)\n\
                     literal:    'text' (a quote inside is doubled: 'it''s')  |  X'68656c6c6f' (bytes, in hex)"
                .into(),
            notes: format!(
                "Each row is written whole (insert or overwrite, as a key-value set); a statement of many\n\
                 rows is not atomic as a whole, and a later row wins over an earlier one of the same key.\n\
                 ttl: seconds until the key expires (1 to {TTL_SECONDS_MAX}), NULL or left out: never.\n\
                 At most {INSERT_ROWS_MAX} rows a statement. ON CONFLICT DO NOTHING leaves a key that is\n\
                 there alone (insert-if-absent; the reply counts the rows inserted); DO UPDATE changes it\n\
                 as UPDATE would. value + n is a counter (the value is a decimal integer; an absent key\n\
                 gets the row's value)."
            ),
            examples: &[
                "INSERT INTO kv (key, value) VALUES ('user:1', 'alice');",
                "INSERT INTO kv (key, value) VALUES ('user:2', 'bob'), ('user:3', 'carol');",
                "INSERT INTO kv (key, value, ttl) VALUES ('session:9', X'00ff', 3600);",
                "INSERT INTO kv (key, value, ttl) VALUES ('lock:job', 'worker-7', 30) ON CONFLICT DO NOTHING;",
                "INSERT INTO kv (key, value) VALUES ('hits', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value;",
            ],
        },
        Topic {
            name: "UPDATE",
            what: "change the value of an existing key",
            syntax: "UPDATE kv SET value = (literal | value + n | value - n) [, ttl = seconds | , ttl = NULL]\n\
                     \x20   WHERE key = literal [AND value = literal] [RETURNING * | returned [, ...]]"
                .into(),
            notes: "Only an existing key changes: a missing one fails with KEY_NOT_FOUND. Without ttl the key\n\
                    keeps its expiry; ttl = NULL makes it never expire. AND value = literal is a\n\
                    compare-and-set: 0 rows (not an error) when the key holds another value or is missing.\n\
                    value + n needs a decimal integer value; otherwise, or on overflow, nothing changes."
                .into(),
            examples: &[
                "UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';",
                "UPDATE kv SET value = 'renewed', ttl = 60 WHERE key = 'session:9';",
                "UPDATE kv SET value = 'worker-8' WHERE key = 'lock:job' AND value = 'worker-7';",
                "UPDATE kv SET value = value + 10 WHERE key = 'hits' RETURNING old.value, value;",
            ],
        },
        Topic {
            name: "DELETE",
            what: "remove keys",
            syntax: format!(
                "DELETE FROM kv WHERE condition\n\
                 DELETE FROM kv WHERE key = literal [AND value = literal] [RETURNING * | returned [, ...]]\n\
                 DELETE FROM kv WHERE key IN (literal [, ...]) [RETURNING * | returned [, ...]]\n\n{}",
                literal_and_condition()
            ),
            notes: "WHERE is required. Missing keys are no error; the reply counts the keys removed. With\n\
                    AND value = literal the key goes only if it holds that value; RETURNING value pops it."
                .into(),
            examples: &[
                "DELETE FROM kv WHERE key = 'user:1';",
                "DELETE FROM kv WHERE key LIKE 'session:%';",
                "DELETE FROM kv WHERE key = 'lock:job' AND value = 'worker-8';",
                "DELETE FROM kv WHERE key = 'hits' RETURNING value;",
            ],
        },
        Topic {
            name: "SHOW STATS",
            what: "the server's counters (also \\stats)",
            syntax: "SHOW STATS".into(),
            notes: "(name, value) rows: operations per statement kind, latency percentiles (p50 to max),\n\
                    connections, keys, memory, bytes in and out, rate-limited requests, failed logins."
                .into(),
            examples: &["SHOW STATS;"],
        },
        Topic {
            name: "SHOW STATUS",
            what: "the server and this session (also \\status)",
            syntax: "SHOW STATUS".into(),
            notes: "(name, value) rows: version, uptime, shards, keys per shard, durability mode, TLS, and\n\
                    the user and role of this session."
                .into(),
            examples: &["SHOW STATUS;"],
        },
        Topic {
            name: "SHOW SLOWLOG",
            what: "the recent statements that were slow, newest first",
            syntax: "SHOW SLOWLOG [ LIMIT count ]\nSHOW SLOWLOG RESET".into(),
            notes: "Rows (time_unix_ms, duration_us, user, kind, target, rows, shard) of the statements whose\n\
                    latency reached velocityd's --slowlog-threshold-us (default 10000 microseconds), the last\n\
                    128 of each core, newest first; LIMIT keeps the newest n. target names the keys or key\n\
                    range a statement touched, never a value. RESET empties it (readwrite users only)."
                .into(),
            examples: &["SHOW SLOWLOG;", "SHOW SLOWLOG LIMIT 10;", "SHOW SLOWLOG RESET;"],
        },
    ]
}

fn render(t: &Topic) -> String {
    let mut out = format!("Statement:   {}\nDescription: {}\nSyntax:\n", t.name, t.what);
    for l in t.syntax.lines() {
        out.push_str(&format!("  {l}\n").replace("  \n", "\n"));
    }
    out.push('\n');
    out.push_str(&t.notes);
    out.push_str("\n\nExample");
    out.push_str(if t.examples.len() == 1 { ":\n" } else { "s:\n" });
    for e in t.examples {
        out.push_str(&format!("  {e}\n"));
    }
    out
}

/// `\h` with its argument (blank: the list).
pub fn statement_help(arg: &str) -> Result<String, String> {
    let arg = arg.trim().trim_end_matches(';').trim();
    let topics = topics();
    if arg.is_empty() {
        let mut out = String::from("Available help:\n ");
        for t in &topics {
            out.push_str(&format!(" {:<12}", t.name));
        }
        out.push_str(
            "\n\nType \\h STATEMENT for its grammar and examples (\\h SELECT), \\h * for all of them.\n\
             Every statement works on the one table kv (key, value, ttl); keywords are case-insensitive.\n",
        );
        return Ok(out);
    }
    let want: Vec<String> = arg.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
    let want = want.join(" ");
    let chosen: Vec<&Topic> = topics
        .iter()
        .filter(|t| want == "*" || t.name == want || t.name.split(' ').next() == Some(want.as_str()))
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "No help available for \"{}\".\nTry \\h with no arguments to see available help.",
            super::print::safe_text(arg)
        ));
    }
    Ok(chosen.iter().map(|t| render(t)).collect::<Vec<_>>().join("\n"))
}

/// Words a Redis user types first, none of which begins a statement of the dialect.
pub const REDIS_WORDS: &[&str] =
    &["GET", "SET", "DEL", "MGET", "MSET", "EXISTS", "KEYS", "TTL", "DBSIZE", "INFO", "SETEX"];

/// Split like redis-cli: blanks separate, "…" or '…' quote.
fn redis_args(line: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut arg = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            loop {
                match chars.next()? {
                    ch if ch == c => break,
                    '\\' if c == '"' => arg.push(chars.next()?),
                    ch => arg.push(ch),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                arg.push(ch);
                chars.next();
            }
        }
        args.push(arg);
    }
    Some(args)
}

/// A Redis glob (`*`, `?`) as a LIKE pattern.
fn like_of_glob(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// When `line` is a Redis command, what to say: its SQL, or where to look. Nothing is run.
pub fn redis_hint(line: &str) -> Option<String> {
    let first = line.split_whitespace().next()?.to_ascii_uppercase();
    if !REDIS_WORDS.contains(&first.as_str()) {
        return None;
    }
    let args = redis_args(line).unwrap_or_default();
    let a: Vec<String> = args.iter().skip(1).map(|s| q(s.as_bytes())).collect();
    let keys = |a: &[String]| a.join(", ");
    let sql = match (first.as_str(), a.len()) {
        ("GET", 1) => Some(format!("SELECT value FROM kv WHERE key = {};", a[0])),
        ("SET", 2) => Some(format!("INSERT INTO kv (key, value) VALUES ({}, {});", a[0], a[1])),
        ("SET", 4) if args[3].eq_ignore_ascii_case("EX") && args[4].parse::<u64>().is_ok() => {
            Some(format!("INSERT INTO kv (key, value, ttl) VALUES ({}, {}, {});", a[0], a[1], args[4]))
        }
        ("SETEX", 3) if args[2].parse::<u64>().is_ok() => {
            Some(format!("INSERT INTO kv (key, value, ttl) VALUES ({}, {}, {});", a[0], a[2], args[2]))
        }
        ("DEL", 1) => Some(format!("DELETE FROM kv WHERE key = {};", a[0])),
        ("DEL", n) if n > 1 => Some(format!("DELETE FROM kv WHERE key IN ({});", keys(&a))),
        ("MGET", n) if n > 0 => Some(format!("SELECT key, value FROM kv WHERE key IN ({});", keys(&a))),
        ("MSET", n) if n > 0 && n % 2 == 0 => {
            let rows: Vec<String> = a.chunks(2).map(|p| format!("({}, {})", p[0], p[1])).collect();
            Some(format!("INSERT INTO kv (key, value) VALUES {};", rows.join(", ")))
        }
        ("EXISTS", n) if n > 0 => Some(format!("SELECT COUNT(*) FROM kv WHERE key IN ({});", keys(&a))),
        ("KEYS", 1) => {
            Some(format!("SELECT key FROM kv WHERE key LIKE {};", q(like_of_glob(&args[1]).as_bytes())))
        }
        ("TTL", 1) => Some(format!("SELECT ttl FROM kv WHERE key = {};", a[0])),
        ("DBSIZE", 0) => Some("SELECT COUNT(*) FROM kv;".into()),
        ("INFO", _) => Some("SHOW STATUS;   (or SHOW STATS;)".into()),
        _ => None,
    };
    Some(match sql {
        Some(sql) => format!("Velocity speaks SQL, not Redis commands. In SQL that is:\n    {sql}\n(not run; \\h lists the statements)\n"),
        None => "Velocity speaks SQL, not Redis commands: \\h lists the statements, \\h SELECT shows one.\n".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in the help is a statement the server accepts.
    #[test]
    fn every_example_parses() {
        for t in topics() {
            for e in t.examples {
                velocity::sql::parse(e).unwrap_or_else(|err| panic!("{}: {e}: {err}", t.name));
            }
        }
    }

    #[test]
    fn statement_help_finds_topics() {
        assert!(statement_help("").unwrap().contains("SELECT"));
        let s = statement_help("select").unwrap();
        assert!(s.starts_with("Statement:   SELECT\n"), "{s}");
        assert!(
            s.contains("ORDER BY key") && s.contains("SELECT value FROM kv WHERE key = 'user:1';"),
            "{s}"
        );
        let show = statement_help("show").unwrap();
        assert!(show.contains("SHOW STATS") && show.contains("SHOW STATUS"), "{show}");
        let one = statement_help("Show  Stats;").unwrap();
        assert!(one.contains("SHOW STATS") && !one.contains("SHOW STATUS"), "{one}");
        assert!(
            show.contains("SHOW SLOWLOG [ LIMIT count ]") && show.contains("SHOW SLOWLOG RESET"),
            "{show}"
        );
        let slow = statement_help("show slowlog").unwrap();
        assert!(slow.starts_with("Statement:   SHOW SLOWLOG\n") && slow.contains("never a value"), "{slow}");
        assert_eq!(statement_help("*").unwrap().matches("Statement:").count(), topics().len());
        assert!(statement_help("DROP").unwrap_err().contains("No help available for \"DROP\""));
    }

    #[test]
    fn redis_commands_get_their_sql() {
        let sql = |l: &str| redis_hint(l).unwrap().lines().nth(1).unwrap_or("").trim().to_owned();
        assert_eq!(sql("GET user:1"), "SELECT value FROM kv WHERE key = 'user:1';");
        assert_eq!(sql("set k \"two words\""), "INSERT INTO kv (key, value) VALUES ('k', 'two words');");
        assert_eq!(sql("SET k v EX 60"), "INSERT INTO kv (key, value, ttl) VALUES ('k', 'v', 60);");
        assert_eq!(sql("SETEX k 60 v"), "INSERT INTO kv (key, value, ttl) VALUES ('k', 'v', 60);");
        assert_eq!(sql("DEL a b"), "DELETE FROM kv WHERE key IN ('a', 'b');");
        assert_eq!(sql("MSET a 1 b 2"), "INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2');");
        assert_eq!(sql("KEYS user:*_?"), "SELECT key FROM kv WHERE key LIKE 'user:%\\__';");
        assert_eq!(sql("get it's"), "SELECT value FROM kv WHERE key = 'it''s';");
        for l in [
            "GET user:1",
            "SET a b",
            "DEL a b",
            "MGET a b",
            "MSET a 1",
            "EXISTS a",
            "KEYS *",
            "TTL a",
            "DBSIZE",
        ] {
            let h = redis_hint(l).unwrap();
            let s = h.lines().nth(1).unwrap().trim();
            if s.starts_with("SELECT") || s.starts_with("INSERT") || s.starts_with("DELETE") {
                velocity::sql::parse(s).unwrap_or_else(|e| panic!("{l}: {s}: {e}"));
            }
        }
        assert!(redis_hint("GET").unwrap().contains("\\h lists the statements"));
        assert_eq!(redis_hint("SELECT value FROM kv"), None);
        assert_eq!(redis_hint("DELETE FROM kv WHERE key = 'a'"), None);
    }
}
