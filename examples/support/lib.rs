//! Shared pieces of the examples (being written).
