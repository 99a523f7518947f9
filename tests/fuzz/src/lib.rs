//! The checks behind shade's fuzz targets; see `checks.rs` and
//! docs/FUZZING.md.

#[path = "checks.rs"]
mod checks;

pub use checks::*;

#[cfg(feature = "gateway")]
pub mod gateway;
