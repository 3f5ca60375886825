//! Descriptors never leak into a child (docs/FAULTS.md G2, G3): not the user's
//! (opened without CLOEXEC), and not a sibling call's, so a call finishes
//! in its own run time while another thread's long child runs.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the test opens descriptors without CLOEXEC through libc"
)]

mod common;

use std::time::{Duration, Instant};

use bombsquad::{Backend, Error, Isolate, StartMethod, bombsquad};

/// The child's descriptors and their targets, without the one `read_dir`
/// holds while listing them.
fn my_fds() -> Vec<(i32, String)> {
    common::open_fds()
        .into_iter()
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .collect()
}

#[bombsquad(backend = "pipe")]
fn my_fds_pipe() -> Vec<(i32, String)> {
    my_fds()
}

#[bombsquad(backend = "file")]
fn my_fds_file() -> Vec<(i32, String)> {
    my_fds()
}

/// A listening TCP socket on 127.0.0.1, without SOCK_CLOEXEC.
fn leaky_listener() -> i32 {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    assert_eq!(unsafe { libc::bind(fd, (&raw const addr).cast(), len) }, 0);
    assert_eq!(unsafe { libc::listen(fd, 1) }, 0);
    fd
}

#[test]
fn user_descriptors_without_cloexec_do_not_reach_the_child() {
    common::watchdog();
    let file = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(file >= 0);
    let listener = leaky_listener();
    let spawned = Isolate::new().start_method(StartMethod::Spawn);
    let forkserved = Isolate::new().start_method(StartMethod::Forkserver);
    for (combination, fds) in [
        (
            "fork/pipe",
            Isolate::new().backend(Backend::Pipe).fork(my_fds),
        ),
        (
            "fork/file",
            Isolate::new().backend(Backend::File).fork(my_fds),
        ),
        ("spawn/pipe", spawned.scope(my_fds_pipe)),
        ("spawn/file", spawned.scope(my_fds_file)),
        ("forkserver/pipe", forkserved.scope(my_fds_pipe)),
        ("forkserver/file", forkserved.scope(my_fds_file)),
    ] {
        let fds = fds.unwrap();
        let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(numbers.len(), 4, "{combination}: {fds:?}");
        assert_eq!(&numbers[..3], &[0, 1, 2], "{combination}: {fds:?}");
        let (reply_fd, reply) = &fds[3];
        assert!(
            reply.starts_with("pipe:") || reply.ends_with("(deleted)"),
            "{combination}: fd {reply_fd} is {reply}, not the reply channel"
        );
        // Besides stdio there is only the reply channel; a forked child
        // keeps the parent's numbers, so theirs must be gone too.
        if combination.starts_with("fork/") {
            assert!(!numbers.contains(&file) && !numbers.contains(&listener));
        }
    }
    unsafe {
        libc::close(file);
        libc::close(listener);
    }
}

fn sleep_then(value: u8) -> u8 {
    std::thread::sleep(Duration::from_millis(2500));
    value
}

#[bombsquad(backend = "file")]
fn long_spawned() -> u8 {
    sleep_then(9)
}

#[bombsquad(backend = "pipe")]
fn quick_pipe() -> u8 {
    1
}

#[bombsquad(backend = "file")]
fn quick_file() -> u8 {
    2
}

#[test]
fn a_call_is_not_held_up_by_a_sibling_calls_long_child() {
    common::watchdog();
    let long_fork = std::thread::spawn(|| {
        Isolate::new()
            .backend(Backend::Pipe)
            .timeout(Duration::from_secs(20))
            .fork(|| sleep_then(8))
    });
    let long_spawn = std::thread::spawn(long_spawned);
    std::thread::sleep(Duration::from_millis(200)); // both long children run
    for i in 0..20 {
        let started = Instant::now();
        let result: Result<u8, Error> = match i % 4 {
            0 => Isolate::new().backend(Backend::Pipe).fork(|| 1),
            1 => Isolate::new().backend(Backend::File).fork(|| 2),
            2 => quick_pipe(),
            _ => quick_file(),
        };
        assert!(matches!(result, Ok(1 | 2)), "{i}: {result:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "call {i} took {took:?}");
    }
    assert!(!long_fork.is_finished() && !long_spawn.is_finished());
    assert_eq!(long_fork.join().unwrap().unwrap(), 8);
    assert_eq!(long_spawn.join().unwrap().unwrap(), 9);
}
