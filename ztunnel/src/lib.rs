//! The node proxy (issue 3): being written.
