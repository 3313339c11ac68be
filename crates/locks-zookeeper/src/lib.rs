//! Global-scope locks on ZooKeeper (being written).
