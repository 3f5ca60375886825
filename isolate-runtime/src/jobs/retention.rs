//! Which finished jobs to forget so the log directory stays bounded by age
//! and total size. Running jobs are never chosen.

use std::time::{Duration, SystemTime};

use super::info::{JobId, JobInfo};

/// How long, and how much, finished jobs' logs are kept.
///
/// When applied, a finished job (its row and its log) is removed if it ended
/// more than `max_age` ago; then, while all logs together are larger than
/// `max_total_bytes`, the oldest finished jobs go first. A running job's log
/// is never removed, even if it alone exceeds the size limit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bombsquad::jobs::Retention;
///
/// let policy = Retention::default()
///     .max_age(Duration::from_secs(24 * 3600))
///     .max_total_bytes(None); // no size limit
/// assert_eq!(policy.get_max_total_bytes(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    max_age: Option<Duration>,
    max_total_bytes: Option<u64>,
}

impl Default for Retention {
    /// Seven days, and 1 GiB of logs.
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_total_bytes: Some(1 << 30),
        }
    }
}

impl Retention {
    /// Keeps everything: no age and no size limit.
    pub fn keep_all() -> Self {
        Retention {
            max_age: None,
            max_total_bytes: None,
        }
    }

    /// Forget finished jobs that ended longer ago than this (`None`: no limit).
    pub fn max_age(mut self, max_age: impl Into<Option<Duration>>) -> Self {
        self.max_age = max_age.into();
        self
    }

    /// Keep all logs together under this many bytes, oldest finished jobs
    /// going first (`None`: no limit).
    pub fn max_total_bytes(mut self, max_total_bytes: impl Into<Option<u64>>) -> Self {
        self.max_total_bytes = max_total_bytes.into();
        self
    }

    /// The age limit.
    pub fn get_max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The size limit.
    pub fn get_max_total_bytes(&self) -> Option<u64> {
        self.max_total_bytes
    }

    /// The ids of the jobs to forget, given each job and its log size.
    pub(crate) fn select(&self, jobs: &[(JobInfo, u64)], now: SystemTime) -> Vec<JobId> {
        let mut finished: Vec<&(JobInfo, u64)> = jobs
            .iter()
            .filter(|(info, _)| !info.status.is_running())
            .collect();
        finished.sort_by_key(|(info, _)| finished_at(info));

        let too_old = |info: &JobInfo| {
            self.max_age.is_some_and(|max_age| {
                now.duration_since(finished_at(info))
                    .is_ok_and(|age| age > max_age)
            })
        };
        let (expired, kept): (Vec<_>, Vec<_>) =
            finished.into_iter().partition(|(info, _)| too_old(info));
        let mut chosen: Vec<JobId> = expired.iter().map(|(info, _)| info.id).collect();

        if let Some(limit) = self.max_total_bytes {
            let mut total: u64 = jobs
                .iter()
                .filter(|(info, _)| !chosen.contains(&info.id))
                .map(|(_, bytes)| bytes)
                .sum();
            for (info, bytes) in kept {
                if total <= limit {
                    break;
                }
                chosen.push(info.id);
                total -= bytes;
            }
        }
        chosen
    }
}

/// When a finished job stopped counting as recent: its end, or its start for
/// a lost job whose end nobody saw.
fn finished_at(info: &JobInfo) -> SystemTime {
    info.ended_at.unwrap_or(info.started_at)
}

#[cfg(test)]
mod tests {
    use super::super::command::Command;
    use super::super::info::Status;
    use super::*;

    fn job(status: Status, age_secs: u64, now: SystemTime) -> JobInfo {
        let at = now - Duration::from_secs(age_secs);
        JobInfo {
            id: JobId::new_v4(),
            command: Command::new("true", Vec::<String>::new()),
            pid: 1,
            owner: JobId::new_v4(),
            status,
            started_at: at,
            ended_at: (!status.is_running()).then_some(at),
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn age_then_size_and_never_running() {
        let now = SystemTime::now();
        let old = job(Status::Exited(0), 100, now);
        let middle = job(Status::Lost, 50, now);
        let recent = job(Status::Exited(1), 10, now);
        let running = job(Status::Running, 1000, now);
        let jobs = [
            (old.clone(), 10),
            (middle.clone(), 10),
            (recent.clone(), 10),
            (running, 10),
        ];

        let by_age = Retention::keep_all().max_age(Duration::from_secs(60));
        assert_eq!(by_age.select(&jobs, now), vec![old.id]);

        let by_size = Retention::keep_all().max_total_bytes(25);
        assert_eq!(by_size.select(&jobs, now), vec![old.id, middle.id]);

        let nothing_fits = Retention::keep_all().max_total_bytes(0);
        assert_eq!(
            nothing_fits.select(&jobs, now),
            vec![old.id, middle.id, recent.id]
        );
    }
}
