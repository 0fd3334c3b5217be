//! One file per command family; each `do_<command>` does the work through the controller and
//! returns what it has to report, printed by `output::Reply::print`.
pub mod bench;
pub mod capture;
pub mod demo;
pub mod docker_plugin;
pub mod fdb;
pub mod forward;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod ns;
pub mod peer;
pub mod ports;
pub mod run;
pub mod stats;
pub mod switch;
pub mod tables;
