//! `bombsquad-jobs`: a service that runs commands as jobs (`serve`), and the
//! client commands that start, watch and stop them. Linux only; built with
//! `--features jobs`.
//!
//! ```text
//! $ bombsquad-jobs serve &
//! $ id=$(bombsquad-jobs start --memory 64M -- sh -c 'echo hi; sleep 5')
//! $ bombsquad-jobs logs --follow "$id"
//! hi
//! $ bombsquad-jobs status "$id"
//! exited with code 0
//! ```
//!
//! Exit codes: 0 done; 1 refused or failed (`no such job`, a bad command,
//! a limit the host cannot enforce); 2 no service is running (or bad usage).

/// Like `eprintln!`, but a closed stderr (a service started with `2>&-`)
/// is no reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod client;
mod protocol;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;

use bombsquad::jobs::JobId;
use clap::{Parser, Subcommand};

use client::{Client, Fail, parse_cpus, parse_size};
use protocol::{Op, Reply, StartJob};
use service::Access;

#[derive(Debug, Parser)]
#[command(
    name = "bombsquad-jobs",
    about = "Run commands as jobs under a service: start, watch, stop them",
    after_help = "Exit codes: 0 done; 1 refused or failed (e.g. no such job); \
                  2 no service is running, or bad usage."
)]
struct Cli {
    /// The service's directory: its socket, jobs table and logs. Default:
    /// $BOMBSQUAD_JOBS_DIR, else $XDG_RUNTIME_DIR/bombsquad-jobs, else
    /// bombsquad-jobs-UID in the temp dir.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run the service in the foreground until SIGTERM or SIGINT, which stop
    /// its jobs (SIGTERM, then SIGKILL after 2 s).
    Serve {
        /// Let every user of the host connect (socket 0666 in a 0711
        /// directory); each sees only its own jobs, which run as that user
        /// (the service must run as root to start them). Without it, only
        /// the service's own user can connect (socket 0600 in a 0700 directory).
        #[arg(long)]
        shared: bool,
    },
    /// Start a job; print its id.
    Start {
        /// Memory limit for the whole job (RAM, no swap), e.g. 64M or 1G.
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// CPU limit, in CPUs (0.5: half of one).
        #[arg(long, value_parser = parse_cpus)]
        cpus: Option<f64>,
        /// Limit on processes and threads of the whole job.
        #[arg(long)]
        pids: Option<u64>,
        /// Send stdout and stderr through one pipe: the log keeps the exact
        /// order of the writes, but no longer tells the streams apart.
        #[arg(long)]
        merge_output: bool,
        /// The program to run, after `--`, with its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print a job's status.
    Status {
        id: JobId,
        /// Print the job as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's output (stdout and stderr merged), raw, from the start.
    Logs {
        id: JobId,
        /// Keep printing new output until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a job (SIGTERM to all its processes, SIGKILL after 2 s); print
    /// its final status.
    Stop {
        id: JobId,
        /// SIGKILL at once.
        #[arg(long)]
        kill: bool,
    },
    /// List your jobs, oldest first.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Internal: started by `serve`; cleans up after it when it dies.
    #[command(name = "__guard", hide = true)]
    Guard,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli.dir.unwrap_or_else(service::default_dir);
    match cli.action {
        Action::Serve { shared } => {
            let access = if shared {
                Access::Shared
            } else {
                Access::Private
            };
            service::serve(&dir, access).unwrap_or_else(|message| Fail::Refused(message).exit())
        }
        Action::Guard => service::guard(&dir),
        action => match run(&Client { dir: &dir }, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(fail) => fail.exit(),
        },
    }
}

fn run(client: &Client<'_>, action: Action) -> Result<(), Fail> {
    match action {
        Action::Start {
            memory,
            cpus,
            pids,
            merge_output,
            command,
        } => {
            let job = start_job(command, memory, cpus, pids, merge_output)?;
            match client.ask(Op::Start(job))?.0 {
                Reply::Started(id) => println!("{id}"),
                other => return Err(unexpected(&other)),
            }
        }
        Action::Status { id, json } => match client.ask(Op::Status { id })?.0 {
            Reply::Info(info) => client::print_status(&info, json),
            other => return Err(unexpected(&other)),
        },
        Action::Logs { id, follow } => match client.ask(Op::Logs { id, follow })? {
            (Reply::Logs, stream) => client.copy_logs(stream, follow)?,
            (other, _) => return Err(unexpected(&other)),
        },
        Action::Stop { id, kill } => match client.ask(Op::Stop { id, kill })?.0 {
            Reply::Info(info) => client::print_status(&info, false),
            other => return Err(unexpected(&other)),
        },
        Action::List { json } => match client.ask(Op::List)?.0 {
            Reply::List(jobs) => client::print_list(&jobs, json),
            other => return Err(unexpected(&other)),
        },
        Action::Serve { .. } | Action::Guard => unreachable!("handled in main"),
    }
    Ok(())
}

fn start_job(
    command: Vec<String>,
    memory_bytes: Option<u64>,
    cpus: Option<f64>,
    pids: Option<u64>,
    merged_output: bool,
) -> Result<StartJob, Fail> {
    let mut words = command.into_iter();
    let program = words.next().unwrap_or_default();
    let cwd = std::env::current_dir()
        .map_err(|e| Fail::Refused(format!("cannot read the working directory ({e})")))?;
    Ok(StartJob {
        program,
        args: words.collect(),
        // Variables that are not UTF-8 stay behind: the job cannot get them.
        env: std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .collect(),
        cwd,
        memory_bytes,
        cpus,
        pids,
        merged_output,
    })
}

fn unexpected(reply: &Reply) -> Fail {
    Fail::Refused(format!("the service answered out of turn: {reply:?}"))
}
