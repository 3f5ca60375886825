//! What a job runs: program, arguments, environment and working directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::JobError;

/// A command line to run as a job.
///
/// The job inherits the environment of the current process, plus the
/// variables set with [`Command::env`]; stdin is always `/dev/null`.
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
        match &self.current_dir {
            Some(dir) if !dir.is_dir() => Err(JobError::BadWorkingDir { dir: dir.clone() }),
            _ => Ok(()),
        }
    }

    /// The `std` command that spawns this job: own process group, stdin from
    /// `/dev/null`, stdout and stderr into pipes.
    pub(crate) fn to_std(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;

        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Leading its own group lets `stop` reach everything the job started.
            .process_group(0);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
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
