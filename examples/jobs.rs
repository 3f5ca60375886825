//! A small command line over `bombsquad::jobs`.
//!
//! A job lives only as long as its supervisor, the process that started it.
//! `shell` keeps one supervisor for a whole session, reading commands from
//! stdin (`help` lists them), so jobs run on between commands and
//! `logs --follow` follows them live:
//!
//! ```text
//! $ cargo run --example jobs -- shell
//! jobs> start sh -c 'echo one; sleep 1; echo two >&2; exit 3'
//! started 1 1b4e28ba-2fa1-11d2-883f-0016d3cca427
//! jobs> logs --follow 1
//! one
//! two
//! job 1: exited with code 3
//! jobs> start sleep 30
//! started 2 6fa459ea-ee8a-3ca4-894e-db77e160355e
//! jobs> stop 2
//! job 2: stopped (term)
//! jobs> exit
//! stopped 0 running jobs
//! ```
//!
//! `exit` or end of input stops the session's running jobs; Ctrl-C kills the
//! shell without that cleanup, leaving them `lost` (and maybe running).
//!
//! The other subcommands are one-shot, each its own process:
//! ```text
//! cargo run --example jobs -- start --wait -- sh -c 'echo hi'
//! cargo run --example jobs -- list
//! cargo run --example jobs -- status <id>
//! cargo run --example jobs -- logs <id>
//! cargo run --example jobs -- stop <id> --kill
//! ```
//!
//! All share one directory (`--dir`, default `$TMPDIR/bombsquad-jobs-<uid>`):
//! jobs table, logs and this CLI's owner id. `start --wait` supervises until
//! the job ends; plain `start` exits at once, which stops the job. While a
//! `start --wait` or a `shell` runs, it holds the directory and other
//! invocations are refused.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;
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
        /// Read to the end of the log, then print the job's final status.
        /// A job lives only as long as the process that started it, so a job
        /// started by another invocation has already ended and this prints
        /// its whole log. To follow a live job, use the `shell` subcommand
        /// (`logs --follow <id>` there) or `start --wait`.
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
    /// Read commands from stdin, one per line, with one supervisor for the
    /// whole session: jobs keep running between commands and can be
    /// followed live. Type `help` in it for the commands.
    Shell,
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
                "hint: a `jobs start --wait` or `jobs shell` supervises this --dir; wait for it to end"
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
        } => return start(&jobs, owner, Command::new(program, args), wait),
        Action::Status { id } => print_info(&jobs.query(id, owner)?),
        Action::Logs { id, follow } => {
            // Only an ended job can be seen here (see `follow`'s help), so
            // following and reading to the end are the same read.
            copy_out(jobs.stream(id, owner)?, io::stdout())?;
            if follow {
                eprintln!("job {id}: {}", jobs.wait(id, owner)?.status);
            }
        }
        Action::Stop { id, kill } => {
            let how = if kill { StopType::Kill } else { StopType::Term };
            jobs.stop(id, owner, how)?;
            println!("{}", jobs.query(id, owner)?.status);
        }
        Action::List => {
            for info in jobs.try_list(owner)? {
                println!("{}", list_row(&info));
            }
        }
        Action::Shell => shell(Session {
            jobs,
            owner,
            started: Vec::new(),
        })?,
    }
    Ok(ExitCode::SUCCESS)
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
        let _ = copy_out(stdout, io::stdout());
        let _ = err.join();
    });
    let info = jobs.wait(id, owner)?;
    eprintln!("job {id}: {}", info.status);
    Ok(exit_code(info.status))
}

/// The shell's commands; `usage` picks lines from here, so each starts with
/// its command word and the form ends at the first double space.
const SHELL_HELP: &str = "\
start <prog> [args..]   start a job (words split with shell quoting); prints `started <n> <id>`
status <id>             show the job's record
logs <id>               print the output so far, without waiting for more
logs --follow <id>      print the output as it comes until the job ends, then its status
stop <id> [--kill]      SIGTERM (SIGKILL with --kill), wait for the end, print the status
wait <id>               wait for the job to end, print its status
list                    list this CLI's jobs, oldest first, with their session numbers
help                    print this text
exit                    stop the running jobs and leave (so does end of input)
<id> is a session number (1, 2, ... in start order) or a full job id.";

/// One `shell` session: its supervisor and the jobs it started, whose
/// position (from 1) is their session number.
struct Session {
    jobs: Jobs,
    owner: OwnerId,
    started: Vec<JobId>,
}

/// Runs `session` over stdin's lines until `exit` or end of input. A bad
/// line is reported and skipped; only failing to read stdin is an error.
fn shell(mut session: Session) -> Result<(), Error> {
    let mut stdin = io::stdin().lock();
    let prompt = stdin.is_terminal();
    let mut line = Vec::new();
    loop {
        if prompt {
            eprint!("jobs> ");
        }
        line.clear();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let outcome = std::str::from_utf8(&line)
            .map_err(|_| Error::from("the line is not UTF-8"))
            .and_then(|text| session.run_line(text));
        match outcome {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break,
            Err(error) => eprintln!("error: {error}"),
        }
    }
    session.end();
    Ok(())
}

impl Session {
    fn run_line(&mut self, line: &str) -> Result<ControlFlow<()>, Error> {
        let words = shlex::split(line).ok_or("unbalanced quote or trailing backslash")?;
        let Some((verb, rest)) = words.split_first() else {
            return Ok(ControlFlow::Continue(())); // blank or comment
        };
        match (verb.as_str(), rest) {
            ("start", [program, args @ ..]) => self.start(program, args)?,
            ("status", [id]) => print_info(&self.jobs.query(self.resolve(id)?, self.owner)?),
            ("logs", [id]) => self.logs(self.resolve(id)?)?,
            ("logs", [flag, id] | [id, flag]) if flag == "--follow" => {
                self.follow(self.resolve(id)?)?;
            }
            ("stop", [id]) => self.stop(self.resolve(id)?, StopType::Term)?,
            ("stop", [flag, id] | [id, flag]) if flag == "--kill" => {
                self.stop(self.resolve(id)?, StopType::Kill)?;
            }
            ("wait", [id]) => self.print_status(&self.jobs.wait(self.resolve(id)?, self.owner)?),
            ("list", []) => self.list()?,
            ("help", []) => println!("{SHELL_HELP}"),
            ("exit", []) => return Ok(ControlFlow::Break(())),
            _ => return Err(usage(verb).into()),
        }
        Ok(ControlFlow::Continue(()))
    }

    fn start(&mut self, program: &str, args: &[String]) -> Result<(), Error> {
        let id = self.jobs.start(Command::new(program, args), self.owner)?;
        self.started.push(id);
        println!("started {} {id}", self.started.len());
        Ok(())
    }

    /// Prints the output that exists now, without waiting for more.
    fn logs(&self, id: JobId) -> Result<(), Error> {
        let reader = self.jobs.stream(id, self.owner)?.up_to_now()?;
        copy_out(reader, io::stdout())?;
        if self.jobs.query(id, self.owner)?.status.is_running() {
            eprintln!(
                "({} is running; `logs --follow` follows it)",
                self.label(id)
            );
        }
        Ok(())
    }

    /// Copies the output as it comes until the job ends, then its status.
    fn follow(&self, id: JobId) -> Result<(), Error> {
        copy_out(self.jobs.stream(id, self.owner)?, io::stdout())?;
        self.print_status(&self.jobs.wait(id, self.owner)?);
        Ok(())
    }

    /// Stops the job and waits for its end (at most the grace period after
    /// SIGTERM), so the status printed is the final one.
    fn stop(&self, id: JobId, how: StopType) -> Result<(), Error> {
        self.jobs.stop(id, self.owner, how)?;
        self.print_status(&self.jobs.wait(id, self.owner)?);
        Ok(())
    }

    fn list(&self) -> Result<(), Error> {
        for info in self.jobs.try_list(self.owner)? {
            let number = self.number(info.id).map_or("-".into(), |n| n.to_string());
            println!("{number:>3}  {}", list_row(&info));
        }
        Ok(())
    }

    /// Stops the running jobs by dropping the supervisor, which kills them
    /// (SIGKILL), reaps them and records them as `stopped (kill)`.
    fn end(self) {
        let running = (self.started.iter())
            .filter_map(|id| self.jobs.query(*id, self.owner).ok())
            .filter(|info| info.status.is_running())
            .count();
        drop(self.jobs);
        let plural = if running == 1 { "" } else { "s" };
        println!("stopped {running} running job{plural}");
    }

    /// A session number or a full job id.
    fn resolve(&self, word: &str) -> Result<JobId, Error> {
        if let Ok(number) = word.parse::<usize>() {
            let index = number.checked_sub(1);
            return (index.and_then(|index| self.started.get(index)).copied())
                .ok_or_else(|| format!("no job {number} in this session (see `list`)").into());
        }
        word.parse()
            .map_err(|_| format!("{word:?} is neither a job number nor a job id").into())
    }

    fn number(&self, id: JobId) -> Option<usize> {
        self.started
            .iter()
            .position(|job| *job == id)
            .map(|i| i + 1)
    }

    fn label(&self, id: JobId) -> String {
        self.number(id)
            .map_or(format!("job {id}"), |n| format!("job {n}"))
    }

    fn print_status(&self, info: &JobInfo) {
        println!("{}: {}", self.label(info.id), info.status);
    }
}

/// The message for a line that matches no command: the command's usage if
/// the word is known.
fn usage(verb: &str) -> String {
    let forms: Vec<&str> = (SHELL_HELP.lines())
        .filter(|line| line.split(' ').next() == Some(verb))
        .filter_map(|line| line.split("  ").next())
        .collect();
    if forms.is_empty() {
        format!("unknown command {verb:?}; `help` lists the commands")
    } else {
        format!("usage: {}", forms.join(" | "))
    }
}

/// Copies live output as it comes (flushing every chunk).
fn copy_out(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(()),
            n => {
                to.write_all(&buf[..n])?;
                to.flush()?;
            }
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

fn list_row(info: &JobInfo) -> String {
    let status = info.status.to_string();
    format!("{}  {status:<28}  {}", info.id, info.command)
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
