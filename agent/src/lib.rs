//! shade-agent
