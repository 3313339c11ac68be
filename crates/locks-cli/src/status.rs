//! `locks status`: who holds a lock and who waits for it.
//!
//! Exit status: 0 when the lock is free, 1 when it is held, 2 on an error
//! (printed on stderr). Every field the backend cannot know is printed as
//! `unknown` (`null` in JSON), never guessed.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locks::{Error, ErrorKind, LockStatus, Params, Party};

use crate::{ScopeArg, open_locks};

/// Exit status of `locks status` for an error.
const EXIT_ERROR: u8 = 2;

/// Arguments of `locks status`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  locks status infinidat -p management_address=10.0.0.1\n  \
                  locks status --scope node --name lioadm --json\n  \
                  locks status --all\n\n\
                  Exit status: 0 when the lock is free, 1 when it is held, 2 on an error. \
                  A field the backend cannot know is shown as `unknown` (null in JSON)."
)]
pub(crate) struct StatusArgs {
    /// Catalog id of the lock (e.g. `infinidat`); or use --scope with --name, or --all.
    #[arg(required_unless_present_any = ["name", "all"], conflicts_with_all = ["name", "all"])]
    id: Option<String>,

    /// A template parameter, `key=value` (repeat for several).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = crate::run::parse_param)]
    params: Vec<(String, String)>,

    /// A raw lock name's scope (with --name).
    #[arg(long, requires = "name")]
    scope: Option<ScopeArg>,

    /// A raw lock name (with --scope); the configured prefix is applied.
    #[arg(long, requires = "scope", conflicts_with = "all")]
    name: Option<String>,

    /// Every lock held or waited for, in each configured backend.
    #[arg(long)]
    all: bool,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `locks status`.
pub(crate) async fn status(config: Option<&Path>, args: StatusArgs) -> ExitCode {
    if args.all {
        return every_lock(config, args.json).await;
    }
    match look_up(config, &args).await {
        Ok(status) => {
            if args.json {
                println!("{}", json(&status));
            } else {
                print!("{}", table(&status, SystemTime::now()));
            }
            ExitCode::from(u8::from(status.is_held()))
        }
        Err(e) => {
            eprintln!("locks: {}", e.report());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `locks status --all`: 1 when anything is held, 2 when a backend failed.
async fn every_lock(config: Option<&Path>, as_json: bool) -> ExitCode {
    let locks = match open_locks(config).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("locks: {}", e.report());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let now = SystemTime::now();
    let (mut held, mut failed) = (false, false);
    let mut found = Vec::new();
    for (scope, answer) in locks.statuses().await {
        match answer {
            Ok(statuses) => {
                if !as_json {
                    println!("== {scope} scope: {}", locks.backend(scope).describe());
                    if locks.backend(scope).kind() == "memory" {
                        println!("memory locks live inside each process: not visible from here\n");
                    } else if statuses.is_empty() {
                        println!("nothing held or waited for\n");
                    }
                    for status in &statuses {
                        println!("{}", table(status, now));
                    }
                }
                held |= statuses.iter().any(LockStatus::is_held);
                found.extend(statuses);
            }
            Err(e) => {
                failed = true;
                eprintln!("locks: {scope} scope: {}", e.report());
            }
        }
    }
    if as_json {
        println!(
            "{}",
            serde_json::Value::Array(found.iter().map(json).collect())
        );
    }
    ExitCode::from(if failed { EXIT_ERROR } else { u8::from(held) })
}

async fn look_up(config: Option<&Path>, args: &StatusArgs) -> locks::Result<LockStatus> {
    let locks = open_locks(config).await?;
    match (&args.id, args.scope, &args.name) {
        (Some(id), _, _) => {
            let params: Params = args.params.iter().cloned().collect();
            locks.status(id, &params).await
        }
        (None, Some(scope), Some(name)) if args.params.is_empty() => {
            locks.status_name(scope.into(), name).await
        }
        (None, Some(_), Some(_)) => Err(Error::new(
            ErrorKind::UnknownParameter,
            "--param fills a catalog template; a raw --name takes no parameters",
        )),
        _ => Err(Error::new(
            ErrorKind::InvalidConfig,
            "give a catalog id, or --scope with --name",
        )),
    }
}

/// The table: one line for the lock, one per party, one per note.
fn table(status: &LockStatus, now: SystemTime) -> String {
    let mut out = format!(
        "lock      {} ({} scope, {})\n",
        status.name, status.scope, status.backend
    );
    match &status.holder {
        None => out.push_str("state     free\n"),
        Some(holder) => {
            out.push_str("state     held\n");
            out.push_str(&format!("holder    {}\n", party(holder, now)));
        }
    }
    for (place, waiter) in status.waiters.iter().enumerate() {
        out.push_str(&format!("waiter {:<2} {}\n", place + 1, party(waiter, now)));
    }
    for note in &status.notes {
        out.push_str(&format!("note      {note}\n"));
    }
    out
}

fn party(party: &Party, now: SystemTime) -> String {
    let text = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
    let since = party.since.map(|since| {
        let ago = now.duration_since(since).unwrap_or(Duration::ZERO);
        format!("{} ({:.1} s ago)", utc(since), ago.as_secs_f64())
    });
    format!(
        "host={} pid={} program={} label={} since={} token={}",
        text(party.host.clone()),
        text(party.pid.map(|p| p.to_string())),
        text(party.program.clone()),
        text(party.label.clone()),
        text(since),
        text(party.token.map(|t| t.to_string())),
    )
}

/// The status as one JSON object.
fn json(status: &LockStatus) -> serde_json::Value {
    let party = |party: &Party| {
        serde_json::json!({
            "host": party.host,
            "pid": party.pid,
            "program": party.program,
            "label": party.label,
            "since": party.since.map(utc),
            "token": party.token,
        })
    };
    serde_json::json!({
        "name": status.name.as_str(),
        "scope": status.scope.as_str(),
        "backend": status.backend,
        "held": status.is_held(),
        "holder": status.holder.as_ref().map(party),
        "waiters": status.waiters.iter().map(party).collect::<Vec<_>>(),
        "notes": status.notes,
    })
}

/// `time` as RFC 3339 in UTC, to the millisecond.
fn utc(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locks::{LockName, Scope};

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_764_897_723_456);
        assert_eq!(utc(t), "2025-12-05T01:22:03.456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn unknown_fields_say_so() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        let status = LockStatus {
            holder: Some(Party {
                pid: Some(7),
                since: Some(UNIX_EPOCH + Duration::from_secs(90)),
                ..Party::default()
            }),
            waiters: vec![Party::default()],
            notes: vec!["the kernel does not say who waits".to_owned()],
            ..LockStatus::free(
                LockName::new("lioadm").unwrap(),
                Scope::Node,
                "file:///x".to_owned(),
            )
        };
        let text = table(&status, now);
        assert!(text.contains("state     held\n"), "{text}");
        assert!(
            text.contains(
                "holder    host=unknown pid=7 program=unknown label=unknown \
                 since=1970-01-01T00:01:30.000Z (10.0 s ago) token=unknown\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("waiter 1  host=unknown pid=unknown"),
            "{text}"
        );
        assert!(text.contains("note      the kernel"), "{text}");
        let value = json(&status);
        assert_eq!(value["held"], true);
        assert_eq!(value["holder"]["pid"], 7);
        assert!(value["holder"]["host"].is_null());
        assert_eq!(value["waiters"].as_array().map(Vec::len), Some(1));
    }
}
