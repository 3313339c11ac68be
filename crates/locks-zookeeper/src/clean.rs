//! `clean`: lock directories left without contenders, deleted deepest first.

use locks_core::{CleanReport, Result};
use zookeeper_client as zk;

use crate::path;
use crate::session::Session;

/// How many requests `clean` keeps in flight at once.
const CLEAN_BATCH: usize = 512;

/// One node seen by `clean`.
struct Visited {
    path: String,
    version: i32,
    removable: bool,
}

pub(crate) async fn clean(session: &Session, root: &str) -> Result<CleanReport> {
    let client = &session.client()?;
    let mut report = CleanReport::default();
    // Breadth first: levels[0] is the root, levels[k] its descendants at depth k.
    let mut levels: Vec<Vec<Visited>> = Vec::new();
    let mut next = vec![root.to_owned()];
    while !next.is_empty() {
        let mut level = Vec::new();
        let mut below = Vec::new();
        for chunk in next.chunks(CLEAN_BATCH) {
            // All requests of a chunk leave before the first answer is awaited.
            let pending: Vec<_> = chunk.iter().map(|p| client.get_children(p)).collect();
            for (dir, answer) in chunk.iter().zip(pending) {
                let (children, stat) = match answer.await {
                    Ok(found) => found,
                    Err(zk::Error::NoNode) => continue,
                    Err(e) => return Err(session.error(format_args!("cleaning: listing {dir}"), e)),
                };
                let mut contenders = false;
                for child in children {
                    if path::contender_sequence(&child).is_some() {
                        contenders = true;
                    } else {
                        below.push(format!("{dir}/{child}"));
                    }
                }
                if contenders {
                    report.busy += 1;
                }
                level.push(Visited {
                    path: dir.clone(),
                    version: stat.version,
                    // Ephemeral nodes are somebody's session; the root stays.
                    removable: !contenders && stat.ephemeral_owner == 0 && !levels.is_empty(),
                });
            }
        }
        levels.push(level);
        next = below;
    }
    for level in levels.iter().rev() {
        let candidates: Vec<&Visited> = level.iter().filter(|v| v.removable).collect();
        for chunk in candidates.chunks(CLEAN_BATCH) {
            let pending: Vec<_> = chunk
                .iter()
                .map(|v| client.delete(&v.path, Some(v.version)))
                .collect();
            for (visited, answer) in chunk.iter().zip(pending) {
                match answer.await {
                    Ok(()) => report.removed.push(visited.path.clone()),
                    Err(zk::Error::NoNode) => {}
                    Err(zk::Error::NotEmpty | zk::Error::BadVersion) => report.busy += 1,
                    Err(e) => {
                        return Err(
                            session.error(format_args!("cleaning: deleting {}", visited.path), e)
                        );
                    }
                }
            }
        }
    }
    Ok(report)
}
