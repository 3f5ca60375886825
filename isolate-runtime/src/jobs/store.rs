//! The persisted jobs table: one row per job in an embedded `redb` database
//! in the log directory, so a later [`Jobs`](super::Jobs) over the same
//! directory still lists finished jobs.
//!
//! Rows are [`JobInfo`] in MessagePack (named fields, so new fields can be
//! added later), keyed by the job id.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::cgroup;
use super::error::JobError;
use super::info::{JobId, JobInfo, Status};

const JOBS: TableDefinition<u128, &[u8]> = TableDefinition::new("jobs");

/// The table is small; redb's default 1 GiB cache would be far too much.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Handle on the jobs table.
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the table at `path`, creating the file and table if needed.
    pub(crate) fn open(path: &Path) -> Result<Store, JobError> {
        // Private like the logs: redb itself would create it per the umask.
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(JobError::io(path))?;
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
            Ok(db) => db,
            // Only possible while a forked child still holds redb's lock
            // (see `builder::open_dir`): the directory lock is ours.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                let dir = path.parent().unwrap_or(path).to_owned();
                return Err(JobError::DirInUse { dir });
            }
            Err(error) => return Err(store_error(path, error)),
        };
        let store = Store {
            db,
            path: path.to_owned(),
        };
        // Create the table now so that readers never meet a missing table.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    /// Inserts or replaces the row of `info.id`.
    pub(crate) fn put(&self, info: &JobInfo) -> Result<(), JobError> {
        let row = rmp_serde::to_vec_named(info).map_err(|e| store_error(&self.path, e))?;
        self.write(|table| {
            table.insert(info.id.as_u128(), row.as_slice())?;
            Ok(())
        })
    }

    /// The row of `id`, if any.
    pub(crate) fn get(&self, id: JobId) -> Result<Option<JobInfo>, JobError> {
        let fail = |source: redb::Error| store_error(&self.path, source);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(JOBS).map_err(|e| fail(e.into()))?;
        let row = table.get(id.as_u128()).map_err(|e| fail(e.into()))?;
        row.map(|row| self.decode(row.value())).transpose()
    }

    /// Every row, in no particular order.
    pub(crate) fn all(&self) -> Result<Vec<JobInfo>, JobError> {
        let fail = |source: redb::Error| store_error(&self.path, source);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(JOBS).map_err(|e| fail(e.into()))?;
        let mut rows = Vec::new();
        for entry in table.iter().map_err(|e| fail(e.into()))? {
            let (_, row) = entry.map_err(|e| fail(e.into()))?;
            rows.push(self.decode(row.value())?);
        }
        Ok(rows)
    }

    /// Deletes the rows of `ids` (missing ones are ignored).
    pub(crate) fn remove(&self, ids: &[JobId]) -> Result<(), JobError> {
        self.write(|table| {
            for id in ids {
                table.remove(id.as_u128())?;
            }
            Ok(())
        })
    }

    /// Marks every row still `Running` as `Lost`, after killing what is left
    /// in its cgroups: called right after taking the directory lock, when no
    /// live supervisor can own them any more.
    pub(crate) fn mark_running_as_lost(&self) -> Result<(), JobError> {
        let orphans: Vec<JobInfo> = self
            .all()?
            .into_iter()
            .filter(|info| info.status == Status::Running)
            .inspect(|info| {
                cgroup::remove_dirs(&info.cgroups);
            })
            .map(|info| JobInfo {
                status: Status::Lost,
                ..info
            })
            .collect();
        for info in &orphans {
            self.put(info)?;
        }
        Ok(())
    }

    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<'_, u128, &[u8]>) -> Result<(), redb::Error>,
    ) -> Result<(), JobError> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(JOBS)?;
                change(&mut table)?;
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|source| store_error(&self.path, source))
    }

    fn decode(&self, row: &[u8]) -> Result<JobInfo, JobError> {
        rmp_serde::from_slice(row).map_err(|e| store_error(&self.path, e))
    }
}

fn store_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> JobError {
    JobError::Store {
        path: path.to_owned(),
        source: Box::new(source),
    }
}
