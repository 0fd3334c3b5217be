//! The host-facing half of the control plane: namespaces, links and addresses (rtnetlink),
//! sysctls, private files under /run/switch, the host the controller works for (the machine or
//! a "host" network namespace), process identity, and the checks run before
//! anything is changed.
pub mod ethtool;
pub mod files;
pub mod host;
pub mod netlink;
pub mod netns;
pub mod preflight;
pub mod process;
pub mod sysctl;
