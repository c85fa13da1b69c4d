//! PLACEHOLDER: fault-injection wrapper (being written).
