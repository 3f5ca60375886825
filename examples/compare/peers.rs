//! The peers, same machine, same run: procspawn and rusty-fork from the
//! `benches/peers` crate (its own workspace, so `cargo test --workspace`
//! never builds them), and Python bombsquad from a venv made by
//! `benches/peers/python-setup.sh`. Each is skipped with a note when it
//! cannot be built or installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::{gbps, ratio, show};
use crate::{Config, Floors};

/// One line of a peer's report.
struct Row {
    name: String,
    median: Duration,
    floor: String,
    bytes: usize,
}

fn parse(stdout: &[u8]) -> Vec<Row> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.to_owned();
            let median = Duration::from_secs_f64(fields.next()?.parse().ok()?);
            let floor = fields.next()?.to_owned();
            let bytes = fields.next()?.parse().ok()?;
            Some(Row {
                name,
                median,
                floor,
                bytes,
            })
        })
        .collect()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("peers")
}

pub fn run(config: &Config, floors: Floors) {
    println!("\n== peers, same machine, same run (medians)");
    let rust = rust_peers(config);
    for row in rust.iter().filter(|r| r.floor != "-") {
        let floor = rust
            .iter()
            .find(|f| f.name == row.floor)
            .expect("its floor");
        print_row(row, floor.median, &floor.name);
    }
    if let Some(rows) = python_peers(config) {
        for row in &rows {
            let (floor, name) = match row.floor.as_str() {
                "fork" => (floors.fork, "raw fork (trivial section)"),
                "reexec" => (floors.reexec, "raw re-exec (trivial section)"),
                _ => (
                    rust.iter()
                        .find(|r| r.name == "raw pipe 64 MiB")
                        .map(|r| r.median),
                    "raw pipe 64 MiB",
                ),
            };
            match floor {
                Some(floor) => print_row(row, floor, name),
                None => println!("{:<48} {:>10}", row.name, show(row.median)),
            }
        }
    }
}

fn print_row(row: &Row, floor: Duration, floor_name: &str) {
    if row.bytes > 8 {
        println!(
            "{:<48} {:>10} {:>6.2} GB/s {:>7.2}x the throughput of {floor_name}",
            row.name,
            show(row.median),
            gbps(row.bytes, row.median),
            ratio(floor, row.median),
        );
    } else {
        println!(
            "{:<48} {:>10} {:>7.2}x {floor_name}",
            row.name,
            show(row.median),
            ratio(row.median, floor),
        );
    }
}

/// Builds and runs `benches/peers`; its floors are measured in its own
/// process, interleaved with the peers.
fn rust_peers(config: &Config) -> Vec<Row> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root().join("benches/peers/Cargo.toml");
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir())
        .status();
    if !built.is_ok_and(|s| s.success()) {
        println!("(procspawn and rusty-fork skipped: benches/peers did not build)");
        return Vec::new();
    }
    let output = Command::new(target_dir().join("release/bombsquad-peers"))
        .env("PEERS_ROUNDS", config.rounds.to_string())
        .stderr(Stdio::inherit())
        .output();
    match output {
        Ok(output) if output.status.success() => parse(&output.stdout),
        _ => {
            println!("(procspawn and rusty-fork skipped: bombsquad-peers failed)");
            Vec::new()
        }
    }
}

/// Sets up the venv (once) and runs `benches/peers/python_peer.py`.
fn python_peers(config: &Config) -> Option<Vec<Row>> {
    let venv = target_dir().join("venv");
    let setup = Command::new("bash")
        .arg(root().join("benches/peers/python-setup.sh"))
        .arg(&venv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !setup.is_ok_and(|s| s.success()) {
        println!(
            "(Python bombsquad skipped: benches/peers/python-setup.sh could not make a venv \
             with bombsquad 0.1.2)"
        );
        return None;
    }
    let output = Command::new(venv.join("bin/python"))
        .arg(root().join("benches/peers/python_peer.py"))
        .arg(config.rounds.to_string())
        .stderr(Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success());
    if output.is_none() {
        println!("(Python bombsquad skipped: python_peer.py failed)");
    }
    output.map(|o| parse(&o.stdout))
}
