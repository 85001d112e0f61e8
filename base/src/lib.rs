//! The bottom layer of shadowstore: what every other crate may use and
//! nothing here may import from them.
//!
//! - [`ids`]: node, group, replica and request identities.
//! - [`limits`]: the explicit limits of the node's data plane, API and
//!   storage (the placement crate keeps its own bounds in one place).
//! - [`codec`]: the one binary encoding of stored records and node-to-node
//!   payloads.
//! - [`clock`]: the wall-clock seam.

#[cfg(feature = "cli-docs")]
pub mod cli_docs;
pub mod clock;
pub mod codec;
pub mod ids;
pub mod limits;
