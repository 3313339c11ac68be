//! Global-scope locks on etcd (being written).
