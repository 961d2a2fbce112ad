//! session-logic (manual in progress)
#![cfg_attr(not(test), warn(missing_docs))]

pub mod cookie;
pub mod expiry;
pub mod step;
