//! The file-system core (being written).
pub mod config;
