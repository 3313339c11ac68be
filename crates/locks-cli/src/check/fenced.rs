//! The fenced resource of `locks check --fenced`: a file that keeps the
//! highest fencing token written to it and refuses lower ones, as a storage
//! system that checks tokens does, and the count of stale writes it let in.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use locks::Error;

use super::Holding;

/// The resource beside a check log: `LOG.resource`.
#[derive(Debug, Clone)]
pub(super) struct Resource {
    path: PathBuf,
}

/// One write to the resource, as logged: `write TOKEN PID AT_NS accepted|refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FencedWrite {
    pub(super) token: u64,
    pub(super) pid: u32,
    /// CLOCK_MONOTONIC of the decision, taken while the resource was locked.
    pub(super) at: u64,
    pub(super) accepted: bool,
}

impl Resource {
    /// The resource of the check log `log`.
    pub(super) fn beside(log: &Path) -> Resource {
        let mut path = log.as_os_str().to_owned();
        path.push(".resource");
        Resource {
            path: PathBuf::from(path),
        }
    }

    /// The file that holds the highest token written.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `token` unless a higher one was written before, and returns
    /// the write as it is to be logged. The read, compare and write happen
    /// under the file's own `flock`, a lock of the resource that has nothing
    /// to do with the lock under test.
    ///
    /// # Errors
    /// `Io` when the resource cannot be opened, locked, read or written, or
    /// holds something other than a token.
    pub(super) fn write(&self, token: u64, pid: u32) -> locks::Result<FencedWrite> {
        let context = || format!("the fenced resource {}", self.path.display());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| Error::io(format_args!("opening {}", context()), e))?;
        file.lock()
            .map_err(|e| Error::io(format_args!("locking {}", context()), e))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| Error::io(format_args!("reading {}", context()), e))?;
        let highest = match text.trim() {
            "" => None,
            digits => Some(digits.parse::<u64>().map_err(|_| {
                Error::new(
                    locks::ErrorKind::Io,
                    format!("{} holds {digits:?}, not a token", context()),
                )
            })?),
        };
        let accepted = highest.is_none_or(|highest| token >= highest);
        if accepted {
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(token.to_string().as_bytes()))
                .map_err(|e| Error::io(format_args!("writing {}", context()), e))?;
        }
        let at = super::monotonic_ns();
        // Closing the file releases its flock.
        Ok(FencedWrite {
            token,
            pid,
            at,
            accepted,
        })
    }
}

impl FencedWrite {
    /// The log line of this write.
    pub(super) fn line(&self) -> String {
        let outcome = if self.accepted { "accepted" } else { "refused" };
        format!("write {} {} {} {outcome}\n", self.token, self.pid, self.at)
    }

    /// Parses a log line written by [`line`](Self::line).
    pub(super) fn parse(line: &str) -> Option<FencedWrite> {
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "write" {
            return None;
        }
        let token = fields.next()?.parse().ok()?;
        let pid = fields.next()?.parse().ok()?;
        let at = fields.next()?.parse().ok()?;
        let accepted = match fields.next()? {
            "accepted" => true,
            "refused" => false,
            _ => return None,
        };
        fields.next().is_none().then_some(FencedWrite {
            token,
            pid,
            at,
            accepted,
        })
    }
}

/// Accepted writes made after a holding with a higher token had entered:
/// writes that fencing should have refused. `holdings` are sorted by enter.
pub(super) fn stale_writes(holdings: &[Holding], writes: &[FencedWrite]) -> Vec<FencedWrite> {
    writes
        .iter()
        .filter(|write| write.accepted)
        .filter(|write| {
            holdings
                .iter()
                .take_while(|holding| holding.enter < write.at)
                .any(|holding| holding.token > write.token)
        })
        .copied()
        .collect()
}
