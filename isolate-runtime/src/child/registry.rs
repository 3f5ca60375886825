//! The link-time registry of `#[bombsquad]` functions, looked up by name in
//! a re-executed child. Functions are found by their registered name, never
//! by address (DESIGN.md, mechanism 1).

/// One registered function. Not public API: generated code builds these.
#[doc(hidden)]
#[derive(Debug)]
pub struct Entry {
    /// `module_path!()::name@line:column`: unique within one binary.
    pub name: &'static str,
    /// Decodes the arguments, runs the function and sends the reply. A
    /// one-shot child leaves afterwards; a worker serves its next request.
    pub run: fn(&[u8]),
    /// Run once when a worker serving this entry starts, before it says
    /// it is ready: a task's state is made here.
    pub init: Option<fn()>,
}

/// Every registered function of this binary. Not public API.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static ENTRIES: [Entry];

/// Every `#[child_init]` function of this binary. Not public API.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static CHILD_INITS: [fn()];

/// Runs every `#[child_init]` function, in no particular order, in a child
/// that did not inherit its parent's memory (a spawned or fork-server
/// child, a pool's worker), after its set-up and before the function. A
/// panic there is the call's panic: the panic hook has sent it, and the
/// child leaves.
pub(crate) fn run_child_inits() {
    for init in CHILD_INITS {
        if std::panic::catch_unwind(init).is_err() {
            crate::child::leave();
        }
    }
}

/// The entry registered under `name`.
pub(crate) fn find(name: &str) -> Result<&'static Entry, String> {
    let mut matches = ENTRIES.iter().filter(|entry| entry.name == name);
    match (matches.next(), matches.next()) {
        (Some(entry), None) => Ok(entry),
        (None, _) => Err(format!("unknown function id {name:?}")),
        (Some(_), Some(_)) => Err(format!("function id {name:?} is registered twice")),
    }
}
