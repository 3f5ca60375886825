//! `bombsquad::jobs` in one process: start jobs, follow one's output live,
//! stop another. For jobs that outlive the command starting them, use the
//! `bombsquad-jobs` service and client (see the README).
//!
//! ```text
//! cargo run --features jobs --example jobs
//! ```

use std::io;
use std::time::Duration;

use bombsquad::jobs::{Command, Jobs, OwnerId, Status, StopType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Jobs::builder()
        .stop_grace(Duration::from_millis(500))
        .build()?;
    let me = OwnerId::new_v4();

    // One pipe for both streams, so the log keeps the order of the writes.
    let chatty =
        Command::new("sh", ["-c", "echo one; sleep 0.3; echo two >&2; exit 3"]).merged_output(true);
    let id = jobs.start(chatty, me)?;
    // Follows the job live; EOF once it has ended.
    io::copy(&mut jobs.stream(id, me)?, &mut io::stdout())?;
    let ended = jobs.wait(id, me)?;
    println!("job 1: {}", ended.status);
    assert_eq!(ended.status, Status::Exited(3));

    let sleeper = jobs.start(Command::new("sleep", ["30"]).memory_limit(64 << 20), me)?;
    jobs.stop(sleeper, me, StopType::Term)?;
    println!("job 2: {}", jobs.wait(sleeper, me)?.status);

    let mut all = String::new();
    for info in jobs.list(me) {
        all += &format!("{}  {}  {}\n", info.id, info.status, info.command);
    }
    print!("{all}");
    // Dropping `jobs` kills any job still running.
    Ok(())
}
