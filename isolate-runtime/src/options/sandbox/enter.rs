//! The child's side: it sandboxes itself, last in its set-up, while it has
//! one thread.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::SandboxPolicy;
use super::syscalls::{KILLING, NEW_PROCESS, target_arch};

/// The newest Landlock ABI this build knows: its rights are asked for on a
/// best-effort basis, on top of those of [`crate::vocabulary::sandbox_support::REQUIRED_LANDLOCK_ABI`].
const NEWEST_ABI: ABI = ABI::V6;

/// Sandboxes the calling process as `policy` says: Landlock first, then the
/// seccomp filters (both set `no_new_privs` first; seccompiler does so
/// even when a best-effort Landlock was absent).
///
/// # Errors
///
/// What could not be applied, in words; the child then reports
/// `Error::Sandbox` instead of running the function.
pub(crate) fn enter(policy: &SandboxPolicy) -> Result<(), String> {
    restrict_files(policy).map_err(|e| format!("Landlock: {e}"))?;
    for filter in compiled_filters()? {
        seccompiler::apply_filter(filter).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

/// The filters, compiled once per process: a parent compiles them before
/// it forks ([`prepare`]), so a forked child only installs them.
fn compiled_filters() -> Result<&'static [BpfProgram], String> {
    static FILTERS: OnceLock<Result<Vec<BpfProgram>, String>> = OnceLock::new();
    FILTERS
        .get_or_init(filters)
        .as_deref()
        .map_err(Clone::clone)
}

/// Does in the parent what need not be done per child.
pub(crate) fn prepare() {
    let _ = compiled_filters();
}

fn restrict_files(policy: &SandboxPolicy) -> Result<(), landlock::RulesetError> {
    let required = if policy.best_effort {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let required_abi = ABI::from(crate::vocabulary::sandbox_support::REQUIRED_LANDLOCK_ABI);
    // Reading the executable gives a panic's backtrace its symbols.
    let executable = std::env::current_exe().ok();
    Ruleset::default()
        .set_compatibility(required)
        .handle_access(AccessFs::from_all(required_abi))?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST_ABI))?
        .scope(Scope::from_all(NEWEST_ABI))?
        .create()?
        .add_rules(path_beneath_rules(
            &policy.read_only,
            AccessFs::from_read(NEWEST_ABI),
        ))?
        .add_rules(path_beneath_rules(
            &policy.read_write,
            AccessFs::from_all(NEWEST_ABI),
        ))?
        .add_rules(path_beneath_rules(executable, AccessFs::ReadFile))?
        .restrict_self()?;
    Ok(())
}

/// One filter per action (a filter has one action for what it matches; the
/// kernel applies the strictest answer of all filters).
fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = target_arch().ok_or("no seccomp filter for this architecture")?;
    let unconditional =
        |numbers: &mut dyn Iterator<Item = i64>| -> BTreeMap<i64, Vec<SeccompRule>> {
            numbers.map(|number| (number, Vec::new())).collect()
        };
    let not_a_thread = SeccompRule::new(vec![
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            0,
        )
        .map_err(|e| e.to_string())?,
    ])
    .map_err(|e| e.to_string())?;
    let mut new_process = unconditional(&mut NEW_PROCESS.iter().copied());
    new_process.insert(libc::SYS_clone, vec![not_a_thread]);
    let errno = |code: i32| SeccompAction::Errno(code.cast_unsigned());
    [
        (
            unconditional(&mut KILLING.iter().map(|(n, _)| *n)),
            SeccompAction::Trap,
        ),
        (
            unconditional(&mut [libc::SYS_socket].into_iter()),
            errno(libc::EACCES),
        ),
        (new_process, errno(libc::EPERM)),
        // libc then falls back to `clone`, whose flags the filter above reads.
        (
            unconditional(&mut [libc::SYS_clone3].into_iter()),
            errno(libc::ENOSYS),
        ),
    ]
    .into_iter()
    .map(|(rules, action)| {
        SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
            .and_then(BpfProgram::try_from)
            .map_err(|e| format!("seccomp: {e}"))
    })
    .collect()
}
