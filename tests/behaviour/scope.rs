//! `Isolate::scope`: options known only at run time applied to the
//! `#[bombsquad]` calls a thread makes inside a closure, over the
//! attribute's; nesting, other threads, children, and the combinations
//! that are refused.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "tests read getppid from libc"
)]

use crate::common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bombsquad::{
    Backend, Error, Isolate, PanicMode, StartMethod, Stderr, WorkerOptions, bombsquad,
};

/// Set by the caller at run time: a forked child sees it, a spawned one
/// (a fresh execution of the binary) does not.
static SET_AT_RUN_TIME: AtomicU32 = AtomicU32::new(0);

/// Who started the child: its parent, and whether it shares the caller's
/// memory.
#[bombsquad]
fn parent_and_memory() -> (u32, u32) {
    let parent = unsafe { libc::getppid() }.cast_unsigned();
    (parent, SET_AT_RUN_TIME.load(Ordering::Relaxed))
}

#[test]
fn a_function_without_a_start_method_runs_under_each_start_method_of_a_scope() {
    common::watchdog();
    SET_AT_RUN_TIME.store(7, Ordering::Relaxed);
    let me = std::process::id();
    let (declared, memory) = parent_and_memory().unwrap();
    assert_eq!(
        (Some(declared.cast_signed()), memory),
        (common::fork_server_of(me), 0),
        "declared: none, so the fork server's child"
    );
    let under = |method| {
        Isolate::new()
            .start_method(method)
            .scope(parent_and_memory)
            .unwrap()
    };
    assert_eq!(under(StartMethod::Spawn), (me, 0));
    assert_eq!(under(StartMethod::Fork), (me, 7), "a fork copies memory");
    let (server, memory) = under(StartMethod::Forkserver);
    assert_ne!(server, me, "the fork server is the parent");
    assert_eq!(memory, 0);
}

#[bombsquad(start_method = "forkserver")]
fn forkserved_memory() -> u32 {
    SET_AT_RUN_TIME.load(Ordering::Relaxed)
}

#[test]
fn a_forkserver_function_can_be_forked_from_a_scope() {
    common::watchdog();
    SET_AT_RUN_TIME.store(9, Ordering::Relaxed);
    let forked = Isolate::new()
        .start_method(StartMethod::Fork)
        .scope(forkserved_memory);
    assert_eq!(forked.unwrap(), 9);
}

#[bombsquad(timeout = "1h")]
fn sleeps() {
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn the_scopes_timeout_wins_over_the_attributes() {
    common::watchdog();
    let timeout = Duration::from_millis(100);
    match Isolate::new().timeout(timeout).scope(sleeps) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[bombsquad(start_method = "fork", backend = "pipe", timeout = "30s")]
fn allocates(bytes: usize) -> usize {
    vec![1u8; bytes].len()
}

#[test]
fn the_scopes_memory_limit_applies() {
    common::watchdog();
    let result = Isolate::new()
        .memory(64 << 20)
        .stderr(Stderr::Capture)
        .scope(|| allocates(1 << 30));
    match result {
        Err(Error::NonzeroExitcode(e)) => {
            assert!(e.is_oom(), "{e}");
            assert!(e.to_string().contains("under the 64.0 MiB limit"), "{e}");
        }
        other => panic!("expected an allocation failure, got {other:?}"),
    }
    assert_eq!(allocates(1 << 20).unwrap(), 1 << 20, "outside: no limit");
}

#[bombsquad]
fn spins() -> u64 {
    loop {
        std::hint::black_box(0u64);
    }
}

#[test]
fn the_scopes_cpu_limit_applies() {
    common::watchdog();
    match Isolate::new().cpu(Duration::from_secs(1)).scope(spins) {
        Err(Error::NonzeroExitcode(e)) => assert!(e.is_cpu_limit(), "{e}"),
        other => panic!("expected the CPU limit, got {other:?}"),
    }
}

#[bombsquad(stderr = "null")]
fn complains_then_aborts() {
    eprintln!("complaint on stderr");
    std::process::abort();
}

#[test]
fn the_scopes_stderr_applies() {
    common::watchdog();
    let Err(Error::NonzeroExitcode(declared)) = complains_then_aborts() else {
        panic!("expected an abort");
    };
    assert_eq!(declared.stderr_tail(), b"", "declared: null");
    let scoped = Isolate::new()
        .stderr(Stderr::Capture)
        .scope(complains_then_aborts);
    let Err(Error::NonzeroExitcode(scoped)) = scoped else {
        panic!("expected an abort");
    };
    assert_eq!(scoped.stderr_tail(), b"complaint on stderr\n");
}

#[bombsquad]
fn panics() {
    panic!("on purpose");
}

#[test]
fn the_scopes_panic_mode_applies() {
    common::watchdog();
    match Isolate::new().panic_mode(PanicMode::Error).scope(panics) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "on purpose"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[bombsquad]
fn thread_name() -> Option<String> {
    std::thread::current().name().map(str::to_owned)
}

#[test]
fn the_scopes_stack_size_applies() {
    common::watchdog();
    // The main thread of a child that stops before `main` has no name yet.
    assert_eq!(thread_name().unwrap(), None);
    let scoped = Isolate::new()
        .stack_size(64 << 20)
        .scope(thread_name)
        .unwrap();
    assert_eq!(
        scoped.as_deref(),
        Some("isolated-call"),
        "the function's own thread"
    );
    let forked = Isolate::new()
        .start_method(StartMethod::Fork)
        .stack_size(64 << 20)
        .scope(thread_name)
        .unwrap();
    assert_eq!(
        forked.as_deref(),
        Some("isolated-call"),
        "forked: one such thread"
    );
}

#[bombsquad(backend = "pipe")]
fn small() -> u8 {
    1
}

#[test]
fn the_scopes_backend_and_temp_dir_apply() {
    common::watchdog();
    let missing = "/nonexistent/bombsquad-scope-test";
    let scope = Isolate::new().backend(Backend::File).temp_dir(missing);
    match scope.scope(small) {
        Err(Error::Spawn { what, .. }) => assert!(what.contains(missing), "{what}"),
        other => panic!("expected the file backend to fail in {missing}, got {other:?}"),
    }
    assert_eq!(small().unwrap(), 1, "declared: pipe");
}

#[bombsquad(start_method = "fork", timeout = "30s")]
fn segfaults() -> usize {
    unsafe { libc::strlen(std::ptr::null()) }
}

#[test]
fn the_scopes_name_and_callbacks_apply() {
    common::watchdog();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (fault, finish) = (seen.clone(), seen.clone());
    let result = Isolate::new()
        .name("configured name")
        .on_fault(move |e| {
            fault
                .lock()
                .unwrap()
                .push(format!("fault {}", e.exitcode()))
        })
        .on_finish(move |ok, code| finish.lock().unwrap().push(format!("finish {ok} {code}")))
        .scope(segfaults);
    let Err(Error::NonzeroExitcode(e)) = result else {
        panic!("expected a segfault, got {result:?}");
    };
    assert_eq!(e.function(), Some("configured name"));
    assert!(e.to_string().starts_with("configured name (pid "), "{e}");
    assert_eq!(*seen.lock().unwrap(), ["fault -11", "finish false -11"]);
}

#[test]
fn the_inner_scope_wins_and_the_outer_fills_in() {
    common::watchdog();
    let outer = Isolate::new()
        .timeout(Duration::from_secs(3600))
        .panic_mode(PanicMode::Error);
    // Long enough for a spawned call that panics on a loaded machine (with
    // RUST_BACKTRACE=1 its child symbolizes a backtrace), short for a sleep.
    let inner = Isolate::new().timeout(Duration::from_secs(2));
    outer.scope(|| {
        inner.scope(|| {
            assert!(
                matches!(sleeps(), Err(Error::Timeout { after, .. }) if after == Duration::from_secs(2)),
                "the inner timeout"
            );
            assert!(
                matches!(panics(), Err(Error::Panicked { .. })),
                "the outer panic mode"
            );
        });
        let after_inner = std::panic::catch_unwind(|| {
            Isolate::new()
                .timeout(Duration::from_millis(100))
                .scope(|| sleeps())
        });
        assert!(matches!(after_inner, Ok(Err(Error::Timeout { .. }))));
        assert!(
            matches!(panics(), Err(Error::Panicked { .. })),
            "the outer scope is back"
        );
    });
    let escaped = std::panic::catch_unwind(panics);
    assert!(escaped.is_err(), "outside every scope: re-raised");
}

#[test]
fn a_scope_returns_its_closures_value_and_ends_with_a_panic() {
    common::watchdog();
    let value = Isolate::new().scope(|| (small(), "unchanged"));
    assert_eq!((value.0.unwrap(), value.1), (1, "unchanged"));
    let unwound = std::panic::catch_unwind(|| {
        Isolate::new()
            .panic_mode(PanicMode::Error)
            .scope(|| panic!("inside the scope"))
    });
    assert!(unwound.is_err());
    assert!(
        std::panic::catch_unwind(panics).is_err(),
        "the scope ended with the unwind"
    );
}

#[test]
fn other_threads_are_untouched() {
    common::watchdog();
    Isolate::new().panic_mode(PanicMode::Error).scope(|| {
        let other = std::thread::spawn(|| std::panic::catch_unwind(panics).is_err());
        assert!(other.join().unwrap(), "another thread re-raises");
        assert!(
            matches!(panics(), Err(Error::Panicked { .. })),
            "this one does not"
        );
    });
}

#[bombsquad]
fn exits_three() {
    std::process::exit(3);
}

/// The name the nested call's error gives it. (A forked child that
/// panicked could block on a lock another test thread held at the fork.)
#[bombsquad(start_method = "fork", timeout = "30s")]
fn names_a_nested_failure() -> Option<String> {
    match exits_three() {
        Err(Error::NonzeroExitcode(e)) => e.function().map(str::to_owned),
        _ => None,
    }
}

#[test]
fn calls_inside_a_child_are_not_in_the_scope() {
    common::watchdog();
    let scope = Isolate::new().name("from the scope");
    let Err(Error::NonzeroExitcode(here)) = scope.scope(exits_three) else {
        panic!("expected exit code 3");
    };
    assert_eq!(
        here.function(),
        Some("from the scope"),
        "this thread: scoped"
    );
    let nested = scope.scope(names_a_nested_failure).unwrap();
    assert_eq!(
        nested.as_deref(),
        Some("exits_three"),
        "in the forked child: not"
    );
}

#[test]
fn a_fork_function_refuses_another_start_method() {
    common::watchdog();
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let result = Isolate::new().start_method(method).scope(segfaults);
        let Err(Error::InvalidOptions { message }) = result else {
            panic!("{method:?}: expected InvalidOptions, got {result:?}");
        };
        let name = format!("{method:?}").to_lowercase();
        assert_eq!(
            message,
            format!(
                "Isolate::scope asks for start_method {name} but segfaults is declared with \
                 start_method = \"fork\": it is not registered by name and its arguments are \
                 not serialized, so it can only fork; declare it with start_method = \"spawn\" \
                 or \"forkserver\" to choose among all three at run time"
            )
        );
    }
    let forked = Isolate::new()
        .start_method(StartMethod::Fork)
        .timeout(Duration::from_secs(30))
        .scope(segfaults);
    assert!(
        matches!(forked, Err(Error::NonzeroExitcode(_))),
        "fork is fine"
    );
}

#[test]
fn the_closure_form_refuses_another_start_method() {
    common::watchdog();
    let result = Isolate::new().start_method(StartMethod::Spawn).fork(|| 1);
    let Err(Error::InvalidOptions { message }) = result else {
        panic!("expected InvalidOptions, got {result:?}");
    };
    assert!(
        message
            .starts_with("Isolate::fork always forks, but the builder asks for start_method spawn"),
        "{message}"
    );
    let forked = Isolate::new().start_method(StartMethod::Fork).fork(|| 1);
    assert_eq!(forked.unwrap(), 1);
}

#[bombsquad(pool = 1)]
fn pooled(nap_ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(nap_ms));
    std::process::id()
}

#[test]
fn a_pool_takes_its_per_call_options_from_a_scope() {
    common::watchdog();
    let worker = pooled(0).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let scoped = Isolate::new()
        .timeout(Duration::from_millis(100))
        .start_method(StartMethod::Spawn)
        .on_finish(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
    assert_eq!(
        scoped.scope(|| pooled(0)).unwrap(),
        worker,
        "the same warm worker"
    );
    match scoped.scope(|| pooled(60_000)) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(100)),
        other => panic!("expected the scope's timeout, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_pool_refuses_what_its_workers_fix_at_start() {
    common::watchdog();
    let result = Isolate::new()
        .memory(1 << 30)
        .stderr(Stderr::Null)
        .timeout(Duration::from_secs(5))
        .scope(|| pooled(0));
    let Err(Error::InvalidOptions { message }) = result else {
        panic!("expected InvalidOptions, got {result:?}");
    };
    assert_eq!(
        message,
        "Isolate::scope sets memory, stderr for pooled, a pool = N function, whose workers \
         take them when they start, not per call; set them in its attribute (a pool call \
         takes only timeout, panic, name, max_result, on_success, on_fault, on_kill, on_exit, \
         on_finish from a scope)"
    );
    let forked = Isolate::new()
        .start_method(StartMethod::Fork)
        .scope(|| pooled(0));
    let Err(Error::InvalidOptions { message }) = forked else {
        panic!("expected InvalidOptions, got {forked:?}");
    };
    assert_eq!(
        message,
        "Isolate::scope asks for start_method fork but pooled is a pool = N function, whose \
         workers are always spawned; leave start_method out of the scope, or remove pool \
         from the attribute"
    );
}

#[test]
fn a_worker_refuses_another_start_method() {
    common::watchdog();
    let options = WorkerOptions::new().isolate(Isolate::new().start_method(StartMethod::Fork));
    let result =
        bombsquad::RemoteWorker::spawn_with(|| std::process::Command::new("true"), options);
    let Err(Error::InvalidOptions { message }) = result else {
        panic!("expected InvalidOptions, got {result:?}");
    };
    assert!(
        message.starts_with("a pool's workers are always spawned"),
        "{message}"
    );
}

#[test]
fn the_closure_forms_keep_their_own_options() {
    common::watchdog();
    let result = Isolate::new()
        .timeout(Duration::from_millis(50))
        .panic_mode(PanicMode::Error)
        .scope(|| {
            bombsquad::fork(|| {
                std::thread::sleep(Duration::from_millis(300));
                5
            })
        });
    assert_eq!(result.unwrap(), 5, "no timeout from the scope");
}

#[bombsquad]
fn reports(steps: u32, progress: bombsquad::Progress<u32>) -> u32 {
    for step in 0..steps {
        progress.send(step);
    }
    steps
}

#[test]
fn progress_reaches_the_caller_under_each_start_method_of_a_scope() {
    common::watchdog();
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ] {
        let mut seen = Vec::new();
        let result = Isolate::new()
            .start_method(method)
            .scope(|| reports(3, bombsquad::Progress::new(|step| seen.push(step))));
        assert_eq!(result.unwrap(), 3, "{method:?}");
        assert_eq!(seen, [0, 1, 2], "{method:?}");
    }
}
