//! A small command line over `bombsquad::jobs`.
//!
//! ```text
//! cargo run --example jobs -- start --wait -- sh -c 'echo hi'
//! cargo run --example jobs -- list
//! cargo run --example jobs -- status <id>
//! cargo run --example jobs -- logs <id>
//! cargo run --example jobs -- stop <id> --kill
//! ```
//!
//! Every invocation opens the same directory (`--dir`, by default
//! `$TMPDIR/bombsquad-jobs-<uid>`), where the jobs table, the logs and this
//! CLI's owner id live, so one invocation can start a job and later ones can
//! query it and read its log.
//!
//! A job needs a live supervisor, and the supervisor is the process that
//! started it. So `start --wait` stays and supervises until the job ends;
//! plain `start` prints the id and exits, and exiting stops the job (SIGKILL,
//! status `stopped (kill)`). A supervisor that dies without cleaning up
//! (killed with SIGKILL, crashed) leaves its running jobs `lost`. While a
//! `start --wait` runs, it holds the directory: other invocations on the
//! same `--dir` are refused until it ends.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;

use bombsquad::jobs::{
    Command, JobError, JobId, JobInfo, Jobs, OwnerId, Retention, Status, StopType, Stream,
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Start, watch and stop commands supervised by bombsquad::jobs")]
struct Cli {
    /// Directory for the jobs table, the logs and this CLI's owner id.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start a job and print its id.
    Start {
        /// Supervise the job until it ends, copying its output here, and
        /// exit with its exit code. Without it, the job is stopped when this
        /// command exits.
        #[arg(long)]
        wait: bool,
        /// The program to run.
        program: String,
        /// Its arguments (put `--` before the program to pass flags).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a job's record.
    Status { id: JobId },
    /// Print a job's output (stdout and stderr merged, in arrival order).
    Logs {
        id: JobId,
        /// Keep following until the job ends. Only a job supervised by the
        /// reading process can still be running, so for a job started by
        /// another invocation this prints the complete log, as without it.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a job (SIGTERM, then SIGKILL after the grace period).
    Stop {
        id: JobId,
        /// SIGKILL at once.
        #[arg(long)]
        kill: bool,
    },
    /// List this CLI's jobs, oldest first.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let dir = cli.dir.unwrap_or_else(default_dir);
    let jobs = match Jobs::builder()
        .log_dir(&dir)
        .retention(Retention::default())
        .build()
    {
        Err(error @ JobError::DirInUse { .. }) => {
            eprintln!(
                "hint: another `jobs start --wait` supervises this --dir; wait for it to end"
            );
            return Err(error.into());
        }
        built => built?,
    };
    let owner = owner_id(&dir)?;
    match cli.action {
        Action::Start {
            wait,
            program,
            args,
        } => start(&jobs, owner, Command::new(program, args), wait),
        Action::Status { id } => {
            print_info(&jobs.query(id, owner)?);
            Ok(ExitCode::SUCCESS)
        }
        Action::Logs { id, follow: _ } => {
            // Following and reading to the end are the same read: it ends
            // when the job has ended and everything was printed.
            io::copy(&mut jobs.stream(id, owner)?, &mut io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Stop { id, kill } => {
            let how = if kill { StopType::Kill } else { StopType::Term };
            jobs.stop(id, owner, how)?;
            println!("{}", jobs.query(id, owner)?.status);
            Ok(ExitCode::SUCCESS)
        }
        Action::List => {
            for info in jobs.try_list(owner)? {
                println!(
                    "{}  {:<28}  {}",
                    info.id,
                    info.status.to_string(),
                    info.command
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn start(jobs: &Jobs, owner: OwnerId, command: Command, wait: bool) -> Result<ExitCode, Error> {
    let id = jobs.start(command, owner)?;
    if !wait {
        println!("{id}");
        eprintln!("note: without --wait the job is stopped as this command exits");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("job {id}");
    let stdout = jobs.stream_only(id, owner, Stream::Stdout)?;
    let stderr = jobs.stream_only(id, owner, Stream::Stderr)?;
    thread::scope(|scope| {
        let err = scope.spawn(|| copy_out(stderr, io::stderr()));
        copy_out(stdout, io::stdout());
        let _ = err.join();
    });
    let info = jobs.wait(id, owner)?;
    eprintln!("job {id}: {}", info.status);
    Ok(exit_code(info.status))
}

/// Copies live output as it comes (flushing every chunk).
fn copy_out(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            break;
        }
    }
}

fn exit_code(status: Status) -> ExitCode {
    match status {
        Status::Exited(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Status::Signaled(signal) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    }
}

fn print_info(info: &JobInfo) {
    println!("id:       {}", info.id);
    println!("command:  {}", info.command);
    println!("pid:      {}", info.pid);
    println!("status:   {}", info.status);
    println!("started:  {}", unix_seconds(info.started_at));
    if let Some(ended) = info.ended_at {
        println!("ended:    {}", unix_seconds(ended));
    }
}

fn unix_seconds(at: std::time::SystemTime) -> String {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|since| format!("{:.3} (unix time)", since.as_secs_f64()))
        .unwrap_or_else(|_| "before 1970".into())
}

/// `$TMPDIR/bombsquad-jobs-<uid>`: per user, since the directory is private.
fn default_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's (real) user.
    let uid = std::fs::metadata("/proc/self").map_or(0, |meta| meta.uid());
    std::env::temp_dir().join(format!("bombsquad-jobs-{uid}"))
}

/// This CLI's owner id, created on first use and kept in the directory so
/// that every invocation acts as the same client.
fn owner_id(dir: &Path) -> Result<OwnerId, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("cli-owner");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse()?),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let owner = OwnerId::new_v4();
            let mut file = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{owner}")?;
            Ok(owner)
        }
        Err(error) => Err(error.into()),
    }
}
