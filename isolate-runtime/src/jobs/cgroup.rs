//! One cgroup per job (Linux only): its resource [`Limits`], an exact kill of
//! everything it started, and the out-of-memory verdict.
//!
//! Where the cgroups go:
//! - **cgroup v2** (the unified hierarchy), as a child of this process's own
//!   cgroup. It tracks the job even without controllers (`cgroup.kill` ends
//!   every process in it, grandchildren and `setsid` escapees included, with
//!   no pid-reuse race), and enforces a limit when this cgroup delegates the
//!   controller (`cgroup.subtree_control`).
//! - **cgroup v1**, one directory per controller (memory, cpu, pids) under
//!   this process's cgroup in that hierarchy, for each limit that v2 cannot
//!   enforce.
//!
//! The job joins them between fork and exec (see `launch`), so it never runs
//! a single instruction of its program outside them. A limit that neither
//! version can enforce is an error ([`JobError::LimitUnsupported`]); a job
//! without limits that cannot get a tracking cgroup runs without one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::error::JobError;
use super::info::JobId;

/// The cpu period the cpu limit's quota is a share of (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// How long removing a cgroup waits for its killed processes to be gone.
const EMPTY_PATIENCE: Duration = Duration::from_secs(2);

/// Resource limits of one job, enforced with cgroups. All `None` by default.
///
/// Set through [`Command::memory_limit`](super::Command::memory_limit),
/// [`Command::cpu_limit`](super::Command::cpu_limit) and
/// [`Command::pids_limit`](super::Command::pids_limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    memory_bytes: Option<u64>,
    millicpus: Option<u64>,
    pids: Option<u64>,
}

impl Limits {
    /// Bytes of memory (RAM, and no swap) the whole job may use.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_bytes
    }

    /// CPU time per wall time, in thousandths of a CPU (1500: one and a half CPUs).
    pub fn millicpus(&self) -> Option<u64> {
        self.millicpus
    }

    /// How many processes and threads the whole job may have at once.
    pub fn pids(&self) -> Option<u64> {
        self.pids
    }

    /// True if no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    pub(crate) fn set_memory_bytes(&mut self, bytes: u64) {
        self.memory_bytes = Some(bytes);
    }

    pub(crate) fn set_millicpus(&mut self, millicpus: u64) {
        self.millicpus = Some(millicpus);
    }

    pub(crate) fn set_pids(&mut self, pids: u64) {
        self.pids = Some(pids);
    }

    /// Rejects limits no job could run under.
    pub(crate) fn check(&self) -> Result<(), JobError> {
        let zero = |limit: &'static str| JobError::BadLimit {
            limit,
            reason: "it must be greater than zero",
        };
        match (self.memory_bytes, self.millicpus, self.pids) {
            (Some(0), _, _) => Err(zero("memory")),
            (_, Some(0), _) => Err(zero("cpu")),
            (_, _, Some(0)) => Err(zero("pids")),
            _ => Ok(()),
        }
    }

    /// The controllers these limits need, with the v2 file and value of each.
    fn settings(&self) -> Vec<Setting> {
        let mut settings = Vec::new();
        if let Some(bytes) = self.memory_bytes {
            settings.push(Setting {
                controller: "memory",
                v2: vec![
                    ("memory.max", bytes.to_string()),
                    ("memory.swap.max", "0".into()),
                ],
                v1: vec![
                    ("memory.limit_in_bytes", bytes.to_string()),
                    ("memory.memsw.limit_in_bytes", bytes.to_string()),
                ],
            });
        }
        if let Some(millicpus) = self.millicpus {
            let quota = (millicpus * CPU_PERIOD_US / 1000).max(1000);
            settings.push(Setting {
                controller: "cpu",
                v2: vec![("cpu.max", format!("{quota} {CPU_PERIOD_US}"))],
                v1: vec![
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            });
        }
        if let Some(pids) = self.pids {
            settings.push(Setting {
                controller: "pids",
                v2: vec![("pids.max", pids.to_string())],
                v1: vec![("pids.max", pids.to_string())],
            });
        }
        settings
    }
}

/// One limit: its controller and the files that set it. Files marked
/// optional below (swap) may be missing where the host has no swap accounting.
struct Setting {
    controller: &'static str,
    v2: Vec<(&'static str, String)>,
    v1: Vec<(&'static str, String)>,
}

/// Files whose absence is fine: swap accounting is off on many hosts, and
/// then there is no swap to limit either.
fn optional(file: &str) -> bool {
    matches!(file, "memory.swap.max" | "memory.memsw.limit_in_bytes")
}

/// The cgroup directories of one job, removed with [`JobCgroups::remove`].
#[derive(Debug, Default)]
pub(crate) struct JobCgroups {
    dirs: Vec<PathBuf>,
}

impl JobCgroups {
    /// Creates job `id`'s cgroups and sets `limits` in them.
    ///
    /// # Errors
    ///
    /// [`JobError::LimitUnsupported`] if a limit cannot be enforced here;
    /// nothing is left behind then.
    pub(crate) fn create(id: JobId, limits: &Limits) -> Result<JobCgroups, JobError> {
        let hierarchies = Hierarchies::of_this_process();
        let name = format!("bombsquad-job-{id}");
        let mut cgroups = JobCgroups::default();
        let result = cgroups.populate(&hierarchies, &name, limits);
        if result.is_err() {
            cgroups.remove();
        }
        result.map(|()| cgroups)
    }

    fn populate(
        &mut self,
        hierarchies: &Hierarchies,
        name: &str,
        limits: &Limits,
    ) -> Result<(), JobError> {
        let mut unset = limits.settings();
        if let Some(base) = &hierarchies.v2 {
            let dir = base.join(name);
            if joinable(base) && fs::create_dir(&dir).is_ok() {
                self.dirs.push(dir.clone());
                unset.retain(|setting| {
                    !(enable_v2(base, setting.controller) && write_all(&dir, &setting.v2).is_ok())
                });
            }
        }
        for setting in unset {
            let why_not = |reason: String| JobError::LimitUnsupported {
                limit: setting.controller,
                reason,
            };
            let Some(base) = hierarchies.v1(setting.controller) else {
                return Err(why_not(format!(
                    "the {0} controller is neither delegated to this process's cgroup v2 \
                     (cgroup.subtree_control) nor mounted as cgroup v1",
                    setting.controller
                )));
            };
            let dir = base.join(name);
            fs::create_dir(&dir)
                .map_err(|e| why_not(format!("cannot create {} ({e})", dir.display())))?;
            self.dirs.push(dir.clone());
            write_all(&dir, &setting.v1).map_err(why_not)?;
        }
        if self.dirs.is_empty() {
            // No v2 tracking: a v1 pids cgroup still finds every process.
            if let Some(base) = hierarchies.v1("pids").filter(|base| joinable(base)) {
                let dir = base.join(name);
                if fs::create_dir(&dir).is_ok() {
                    self.dirs.push(dir);
                }
            }
        }
        Ok(())
    }

    /// The directories, as recorded in the job's row.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Each cgroup's `cgroup.procs`, opened for the job to write itself into
    /// between fork and exec.
    pub(crate) fn procs_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|dir| {
                let file = OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?;
                Ok(OwnedFd::from(file))
            })
            .collect()
    }

    /// Kills what is left in the cgroups and removes them.
    pub(crate) fn remove(&mut self) {
        remove_dirs(&self.dirs);
        self.dirs.clear();
    }
}

/// True if a memory cgroup among `dirs` saw the OOM killer kill a process.
pub(crate) fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| {
        ["memory.events", "memory.oom_control"].iter().any(|file| {
            fs::read_to_string(dir.join(file)).is_ok_and(|text| oom_kill_count(&text) > 0)
        })
    })
}

fn oom_kill_count(events: &str) -> u64 {
    events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills every process left in `dirs` and removes them (those that exist).
/// Returns true if none of them holds a process any more.
pub(crate) fn remove_dirs(dirs: &[PathBuf]) -> bool {
    let existing: Vec<&PathBuf> = dirs.iter().filter(|dir| dir.is_dir()).collect();
    for dir in &existing {
        kill_all(dir);
    }
    let deadline = Instant::now() + EMPTY_PATIENCE;
    let mut all_gone = true;
    for dir in existing {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                // EBUSY: killed processes are still exiting.
                Err(_) if Instant::now() < deadline => {
                    kill_all(dir);
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    all_gone &= procs_of(dir).is_empty();
                    break;
                }
            }
        }
    }
    all_gone
}

/// SIGKILL to every process in the cgroup: `cgroup.kill` on v2, which is
/// exact; on v1 each listed pid (a listed process cannot have exited and
/// been replaced unless it died between the read and the kill).
fn kill_all(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..100 {
        let pids = procs_of(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn procs_of(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

/// Makes `controller` available to the children of `base`, if `base` has
/// it (the host or systemd's `Delegate=yes` delegated it). cgroup v2 lets a
/// cgroup hand controllers to its children only while it holds no process
/// itself, so when enabling fails that way, the processes in `base` (this
/// supervisor, and the processes it started outside jobs) move into the leaf
/// [`SUPERVISOR_LEAF`] first, as systemd recommends for delegated services.
fn enable_v2(base: &Path, controller: &str) -> bool {
    let subtree = base.join("cgroup.subtree_control");
    let has = |file: &Path| read_words(file).iter().any(|c| c == controller);
    if has(&subtree) {
        return true;
    }
    if !has(&base.join("cgroup.controllers")) {
        return false;
    }
    let enable = || fs::write(&subtree, format!("+{controller}")).is_ok();
    enable() || (move_into_leaf(base) && enable())
}

/// Where [`enable_v2`] moves the supervisor; job cgroups stay its siblings.
const SUPERVISOR_LEAF: &str = "bombsquad-supervisor";

fn move_into_leaf(base: &Path) -> bool {
    let leaf = base.join(SUPERVISOR_LEAF);
    if fs::create_dir(&leaf).is_err() && !leaf.is_dir() {
        return false;
    }
    let procs = leaf.join("cgroup.procs");
    procs_of(base)
        .iter()
        .all(|pid| fs::write(&procs, pid.to_string()).is_ok())
}

/// True if this process may move processes into children of `base`: it can
/// write `base/cgroup.procs` (the common ancestor's, as the kernel requires).
fn joinable(base: &Path) -> bool {
    OpenOptions::new()
        .write(true)
        .open(base.join("cgroup.procs"))
        .is_ok()
}

fn write_all(dir: &Path, files: &[(&'static str, String)]) -> Result<(), String> {
    for (file, value) in files {
        let path = dir.join(file);
        let written = File::options()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        match written {
            Err(e) if e.kind() == io::ErrorKind::NotFound && optional(file) => {}
            Err(e) => {
                return Err(format!(
                    "writing {value} to {} failed ({e})",
                    path.display()
                ));
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// This process's cgroup directory in each mounted hierarchy.
#[derive(Debug, Default)]
struct Hierarchies {
    v2: Option<PathBuf>,
    /// (controllers of the hierarchy, this process's directory in it)
    v1: Vec<(Vec<String>, PathBuf)>,
}

impl Hierarchies {
    fn of_this_process() -> Hierarchies {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Hierarchies::parse(&mounts, &cgroups)
    }

    /// From `/proc/self/mountinfo` and `/proc/self/cgroup`.
    fn parse(mountinfo: &str, cgroups: &str) -> Hierarchies {
        let mut found = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
                continue;
            };
            let mut right = right.split(' ');
            let (fs_type, options) = (right.next(), right.nth(1).unwrap_or(""));
            let controllers: Vec<String> = options
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro" && !o.contains('='))
                .map(str::to_owned)
                .collect();
            let path = match fs_type {
                Some("cgroup2") => cgroup_path(cgroups, |c| c.is_empty()),
                Some("cgroup") => cgroup_path(cgroups, |c| {
                    let listed: Vec<&str> = c.split(',').collect();
                    !controllers.is_empty() && controllers.iter().all(|w| listed.contains(&&**w))
                }),
                _ => continue,
            };
            let Some(path) = path else { continue };
            // A mount of a subtree shows that subtree at its mount point.
            let path = path
                .strip_prefix(root)
                .filter(|_| *root != "/")
                .unwrap_or(path);
            let dir = Path::new(mount_point).join(path.trim_start_matches('/'));
            match fs_type {
                // Moved there by `enable_v2`: the job cgroups go beside it.
                Some("cgroup2") if dir.ends_with(SUPERVISOR_LEAF) => {
                    found.v2 = dir.parent().map(Path::to_owned);
                }
                Some("cgroup2") => found.v2 = Some(dir),
                _ => found.v1.push((controllers, dir)),
            }
        }
        found
    }

    fn v1(&self, controller: &str) -> Option<&PathBuf> {
        self.v1
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
            .map(|(_, dir)| dir)
    }
}

/// This process's path in the hierarchy whose controller list matches.
fn cgroup_path(cgroups: &str, matches: impl Fn(&str) -> bool) -> Option<&str> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(controllers).then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_found_for_v2_and_each_v1_controller() {
        let mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let cgroups = "9:name=systemd:/\n4:memory:/jobs/7f\n2:cpu,cpuacct:/c\n0::/user.slice\n";
        let found = Hierarchies::parse(mounts, cgroups);
        assert_eq!(
            found.v2,
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice"))
        );
        assert_eq!(
            found.v1("memory"),
            Some(&PathBuf::from("/sys/fs/cgroup/memory/jobs/7f"))
        );
        assert_eq!(
            found.v1("cpu"),
            Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c"))
        );
        assert_eq!(found.v1("pids"), None);
    }

    #[test]
    fn job_cgroups_go_beside_the_supervisors_leaf() {
        let mounts = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let found = Hierarchies::parse(mounts, "0::/app.slice/x.service/bombsquad-supervisor\n");
        assert_eq!(
            found.v2,
            Some(PathBuf::from("/sys/fs/cgroup/app.slice/x.service"))
        );
    }

    #[test]
    fn a_subtree_mount_maps_to_its_mount_point() {
        let subtree = "30 20 0:26 /docker/ab /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let found = Hierarchies::parse(subtree, "0::/docker/ab/x\n");
        assert_eq!(found.v2, Some(PathBuf::from("/sys/fs/cgroup/x")));
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period() {
        let mut limits = Limits::default();
        limits.set_millicpus(1500);
        let settings = limits.settings();
        assert_eq!(settings[0].v2, [("cpu.max", "150000 100000".to_owned())]);
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut limits = Limits::default();
        limits.set_pids(0);
        assert_eq!(
            limits.check().unwrap_err().to_string(),
            "the pids limit is invalid: it must be greater than zero"
        );
    }
}
