//! Helpers shared by the datapath's entry programs.
pub mod config;
pub mod eth;
pub mod fdb;
pub mod forward;
pub mod log;
pub mod maps;
pub mod stats;
