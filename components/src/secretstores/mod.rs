//! The secrets building block.
