//! What a job runs: program, arguments, environment and working directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::Limits;
use super::error::JobError;

/// A command line to run as a job.
///
/// The job inherits the environment of the current process, plus the
/// variables set with [`Command::env`]; stdin is always `/dev/null`.
///
/// Resource limits ([`Command::memory_limit`], [`Command::cpu_limit`],
/// [`Command::pids_limit`]) are enforced with a cgroup per job; a limit the
/// host cannot enforce makes [`Jobs::start`](super::Jobs::start) fail.
///
/// # Output order
///
/// By default stdout and stderr go through two pipes, so the log keeps
/// which stream each chunk came from. Each stream's bytes are in order; but
/// between the streams, the merged log holds chunks in the order the
/// supervisor *read* them, and writes to the two streams that come within
/// one read cycle (microseconds apart) may be logged in either order.
/// [`Command::merged_output`] sends both to one pipe instead: the log then
/// holds the exact order of the writes, and every byte counts as stdout.
///
/// # Examples
///
/// ```
/// use bombsquad::jobs::Command;
///
/// let command = Command::new("sh", ["-c", "echo \"$GREETING\""])
///     .env("GREETING", "hello")
///     .current_dir("/tmp");
/// assert_eq!(command.program(), "sh");
/// assert_eq!(command.args(), ["-c", "echo \"$GREETING\""]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    current_dir: Option<PathBuf>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    merged_output: bool,
    #[serde(default)]
    run_as: Option<(u32, u32)>,
}

impl Command {
    /// A command running `program` with `args`. A `program` without a `/` is
    /// looked up in `PATH`.
    pub fn new<A>(program: impl Into<String>, args: impl IntoIterator<Item = A>) -> Self
    where
        A: Into<String>,
    {
        Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            current_dir: None,
            limits: Limits::default(),
            merged_output: false,
            run_as: None,
        }
    }

    /// Sets the environment variable `key` to `value` for the job (on top of
    /// the inherited environment). A later call for the same key wins.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the job in `dir` instead of the current directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Limits the memory (RAM, no swap) of the whole job, its children
    /// included, to `bytes`. When the job exceeds it, the kernel's OOM killer
    /// kills a process of the job, and the job ends as
    /// [`Status::OutOfMemory`](super::Status::OutOfMemory).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.set_memory_bytes(bytes);
        self
    }

    /// Limits the job to `cpus` CPUs' worth of time (0.5: half of one CPU),
    /// in steps of a thousandth.
    pub fn cpu_limit(mut self, cpus: f64) -> Self {
        // Saturating float-to-int cast: NaN and negatives become 0, refused by `check`.
        self.limits.set_millicpus((cpus * 1000.0).round() as u64);
        self
    }

    /// Limits the job to `pids` processes and threads at once.
    pub fn pids_limit(mut self, pids: u64) -> Self {
        self.limits.set_pids(pids);
        self
    }

    /// With `true`, stdout and stderr share one pipe, so the log keeps the
    /// exact order of the writes; everything is then logged as
    /// [`Stream::Stdout`](super::Stream::Stdout) (see "Output order" above).
    pub fn merged_output(mut self, merged: bool) -> Self {
        self.merged_output = merged;
        self
    }

    /// Runs the job as user `uid` with group `gid` and no supplementary
    /// groups. Needs privilege (root, or `CAP_SETUID` and `CAP_SETGID`)
    /// unless they are this process's own ids.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// The resource limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True if stdout and stderr share one pipe.
    pub fn is_merged_output(&self) -> bool {
        self.merged_output
    }

    /// The user and group set with [`Command::run_as`].
    pub fn get_run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments, without the program name.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The variables set with [`Command::env`], in call order.
    pub fn envs(&self) -> &[(String, String)] {
        &self.env
    }

    /// The working directory set with [`Command::current_dir`].
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.current_dir.as_deref()
    }

    /// Rejects what would make a confusing spawn error: an empty program
    /// name, or a working directory that is not a directory.
    pub(crate) fn check(&self) -> Result<(), JobError> {
        if self.program.is_empty() {
            return Err(JobError::EmptyProgram {});
        }
        self.limits.check()?;
        match &self.current_dir {
            Some(dir) if !dir.is_dir() => Err(JobError::BadWorkingDir { dir: dir.clone() }),
            _ => Ok(()),
        }
    }

    /// The `std` command that spawns this job: own process group, stdin from
    /// `/dev/null`, stdout and stderr into pipes; with merged output, one
    /// pipe whose read end is returned too.
    pub(crate) fn to_std(
        &self,
    ) -> std::io::Result<(std::process::Command, Option<std::io::PipeReader>)> {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;

        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            // Leading its own group lets `stop` reach everything the job started.
            .process_group(0);
        let merged = if self.merged_output {
            let (reader, writer) = std::io::pipe()?;
            command.stdout(writer.try_clone()?).stderr(writer);
            Some(reader)
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        Ok((command, merged))
    }
}

/// Shell-like, for messages and listings; not meant to be parsed back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_words_that_need_it() {
        let command = Command::new("sh", ["-c", "echo 'hi'", ""]);
        assert_eq!(command.to_string(), r#"sh -c 'echo '\''hi'\''' ''"#);
    }
}
