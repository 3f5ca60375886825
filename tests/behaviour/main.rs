//! The behaviours whose tests need no process of their own, one module
//! each, in one test binary (`cargo test --test behaviour`; one module:
//! `cargo test --test behaviour outcomes::`). A test that changes
//! something process-wide, counts the process's descriptors or children,
//! or installs a global hook or subscriber keeps a binary of its own
//! (`tests/README.md` lists them all).

#[path = "../common/mod.rs"]
mod common;

mod arguments;
mod callbacks;
mod closure;
mod crash_midway;
mod file;
mod forensics;
mod nesting;
mod outcomes;
mod outsider;
mod sandbox;
mod scope;
mod shm;
mod warm_paths;
