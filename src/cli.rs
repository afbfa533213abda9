//! Command line (placeholder; being written).
