//! Helpers for the end-to-end tests: start real processes on free loopback ports.
