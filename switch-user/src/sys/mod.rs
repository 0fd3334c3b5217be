//! The host-facing half of the control plane: namespaces, links and addresses (rtnetlink),
//! sysctls and the checks run before anything is changed.
pub mod ethtool;
pub mod netlink;
pub mod netns;
pub mod preflight;
pub mod sysctl;
