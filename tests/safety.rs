//! The library use of a suite: what a user's crate puts in `tests/safety.rs` (with
//! `harness = false` in its Cargo.toml) so that `cargo test --test safety` runs the
//! suite's gates. This one runs `tests/safety/suite.yaml`, a gate the shipped model
//! passes, on the CPU.

fn main() -> std::process::ExitCode {
    scalpel::harness::test_main(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/safety/suite.yaml"
    ))
}
