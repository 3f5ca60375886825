//! Supervise arbitrary Linux commands as jobs (work in progress).
