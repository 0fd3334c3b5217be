//! Verdicts of the TC programs that share their attach point with others.
//!
//! An uplink is shared: the host's own traffic crosses it, and several switches may each have
//! their NAT programs on it (two podman networks with published ports do this). TCX runs the
//! programs of an attach point in order, and `TC_ACT_OK` ends that chain at once: a program
//! that returned it for a packet that is not its own would keep the next switch's program
//! from ever seeing it (and from refusing it, or masquerading it).
//!
//! ```text
//!  uplink ingress (TCX):  [nat_ingress of sw A] ──NEXT──► [nat_ingress of sw B] ──NEXT──► stack
//!                               │ A's connection                │ B's connection
//!                               ▼ OK / redirect (done)          ▼ OK / redirect / SHOT
//! ```

/// `TC_ACT_UNSPEC`, which TCX reads as "next": the next program on the attach point decides,
/// or the stack if there is none. What a program returns for a packet that is not its own.
pub const TC_NEXT: i32 = -1;
