//! The three scopes a lock can exclude across.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// How far a lock reaches: which callers it excludes from each other.
///
/// The scopes are those of the Cinder driver guide: a lock of a wider scope also
/// excludes everything a narrower one does, at a higher cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Threads and tasks of one process (Cinder's `utils.synchronized(name)`).
    /// Example: HGST's `create_volume`, SolidFire's `solidfire-{resource_id}`.
    Process,
    /// Every process on one host (Cinder's `utils.synchronized(name, external=True)`),
    /// typically a lock file. Example: LIO's `lioadm` around `cinder-rtstool`.
    Node,
    /// Every process on every host of a cluster (Cinder's `coordination.synchronized`),
    /// backed by a coordination server. Example: Infinidat's
    /// `infinidat-{management_address}-lock`.
    Global,
}

impl Scope {
    /// All scopes, narrowest first.
    pub const ALL: [Scope; 3] = [Scope::Process, Scope::Node, Scope::Global];

    /// The lower-case name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Node => "node",
            Scope::Global => "global",
        }
    }

    /// The capitalised name used in documents ("Process", "Node", "Global").
    pub fn title(self) -> &'static str {
        match self {
            Scope::Process => "Process",
            Scope::Node => "Node",
            Scope::Global => "Global",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "process" => Ok(Scope::Process),
            "node" => Ok(Scope::Node),
            "global" => Ok(Scope::Global),
            _ => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("unknown scope `{s}`: expected one of process, node, global"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_rejects_others() {
        assert_eq!("Node".parse::<Scope>().unwrap(), Scope::Node);
        assert_eq!("global".parse::<Scope>().unwrap(), Scope::Global);
        let err = "cluster".parse::<Scope>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("cluster"));
    }
}
