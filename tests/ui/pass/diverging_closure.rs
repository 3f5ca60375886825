//! Closures that never return compile under edition 2024 (trybuild builds
//! these cases with the workspace's edition, 2024), where their result type
//! is `!` rather than `()`: the call's `Result<!, Error>` can only be `Err`.

#![deny(warnings)]

use bombsquad::{Error, Isolate};

fn main() {
    let Err(Error::NonzeroExitcode(report)) = bombsquad::fork(|| std::process::abort()) else {
        panic!("an abort is a NonzeroExitcode");
    };
    assert_eq!(report.signal_name(), Some("SIGABRT"));
    let Err(Error::NonzeroExitcode(report)) = Isolate::new().fork(|| std::process::exit(3)) else {
        panic!("an exit is a NonzeroExitcode");
    };
    assert_eq!(report.exitcode(), 3);
    let timeout = Isolate::new().timeout(std::time::Duration::from_millis(100));
    let Err(Error::Timeout { .. }) = timeout.fork(|| loop {
        std::thread::park();
    }) else {
        panic!("a hang is a Timeout");
    };
    // Closures that return still infer their result, and an expected
    // type still gives a diverging closure its result type.
    assert_eq!(bombsquad::fork(|| 6 * 7).unwrap(), 42);
    let typed: Result<u8, Error> = bombsquad::fork(|| std::process::abort());
    assert!(typed.is_err());
}
