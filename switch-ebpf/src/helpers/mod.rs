//! Helpers shared by the datapath's entry programs.
pub mod config;
pub mod decide;
pub mod eth;
pub mod fdb;
pub mod forward;
pub mod forward_xdp;
pub mod ipv4;
pub mod log;
pub mod maps;
pub mod nat;
pub mod reply;
pub mod route;
pub mod stats;
