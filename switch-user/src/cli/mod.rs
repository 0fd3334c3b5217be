//! The command line: clap definitions (`args`), one handler per command family
//! (`commands/`, each a `do_<command>` that returns a [`output::Reply`]), the one place output
//! is printed (`output`), and the one shutdown signal of long-running commands (`signal`).
//!
//! | command            | handler                        | controller                  |
//! |--------------------|--------------------------------|-----------------------------|
//! | up, down, list     | `commands::switch`             | `controller::switch`        |
//! | run                | `commands::run`                | `controller::switch`        |
//! | ns add/del/list    | `commands::ns`                 | `controller::ns`            |
//! | ns attach/detach   | `commands::ns`                 | `controller::ns`            |
//! | ns exec            | `main::exec` (no runtime)      | `sys::netns`                |
//! | ports              | `commands::ports`              | `controller::port`          |
//! | link               | `commands::link`               | `controller::link`          |
//! | forward add/del/list | `commands::forward`          | `controller::forward`       |
//! | fdb [add/del]      | `commands::fdb`                | `controller::fdb`           |
//! | peer add/del/list  | `commands::peer`               | `controller::peer`          |
//! | stats              | `commands::stats`              | `controller::stats`         |
//! | tables             | `commands::tables`             | `controller::tables`        |
//! | logs               | `commands::logs`               | `controller::logs`          |
//! | monitor            | `commands::monitor`            | `controller::monitor`       |
//! | capture            | `commands::capture`            | `controller::capture`       |
//! | metrics [serve]    | `commands::metrics`            | `controller::metrics`       |
//! | bench              | `commands::bench`              | `bench`                     |
//! | demo               | `commands::demo`               | all of the above            |
//! | docker-plugin      | `commands::docker_plugin`      | `docker` (the driver)       |
pub mod args;
pub mod commands;
pub mod output;
pub mod signal;

use args::{Command, NsCommand};
use output::Reply;

/// Runs `command` and returns what it has to report (`json`: the report will be printed as
/// JSON, so progress bars stay hidden).
pub async fn dispatch(command: Command, json: bool) -> anyhow::Result<Reply> {
    use commands::*;
    match command {
        Command::Up(a) => switch::do_up(a).await,
        Command::Down(a) => switch::do_down(a).await,
        Command::List => switch::do_list().await,
        Command::Run(a) => run::do_run(a).await,
        Command::Ns(NsCommand::Exec { .. }) => unreachable!("handled before the runtime starts"),
        Command::Ns(c) => ns::do_ns(c).await,
        Command::Ports(a) => ports::do_ports(a).await,
        Command::Link(a) => link::do_link(a).await,
        Command::Forward(c) => forward::do_forward(c).await,
        Command::Fdb(a) => fdb::do_fdb(a).await,
        Command::Peer(c) => peer::do_peer(c).await,
        Command::Stats(a) => stats::do_stats(a).await,
        Command::Tables(a) => tables::do_tables(a).await,
        Command::Logs(a) => logs::do_logs(a).await,
        Command::Monitor(a) => monitor::do_monitor(a, json).await,
        Command::Capture(a) => capture::do_capture(a, json).await,
        Command::Metrics(a) => metrics::do_metrics(a).await,
        Command::Bench(a) => bench::do_bench(a, json).await,
        Command::Demo => demo::do_demo().await,
        Command::DockerPlugin(a) => docker_plugin::do_docker_plugin(a).await,
    }
}
