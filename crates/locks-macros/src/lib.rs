//! The `#[locked]` attribute (being written).
