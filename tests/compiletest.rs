//! Compile-time diagnostics of `#[bombsquad]`: every misuse is reported on
//! the offending token with the valid choices, and accepted signatures
//! compile (and run) as written.
//!
//! The `.stderr` snapshots are rustc's exact output, so they only hold on
//! the toolchain CI pins. Regenerate with
//! `TRYBUILD=overwrite cargo test --test compiletest`.

#[rustversion::attr(
    not(all(stable, since(1.95))),
    ignore = "diagnostic snapshots are recorded on stable 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
