//! The crash report (issue 4, item 1): the child's fault handler tells the
//! parent the si_code and the faulting address of a SIGSEGV, SIGBUS, SIGILL
//! or SIGFPE, and the child still dies by that signal. Real faults, in both
//! start methods.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use std::os::fd::AsRawFd;

use bombsquad::{Error, NonzeroExitcode, Stderr, bombsquad};

fn nonzero<T: std::fmt::Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

#[bombsquad(stderr = "capture")]
fn null_deref_spawned() -> usize {
    unsafe { libc::strlen(std::ptr::null()) }
}

#[bombsquad(start_method = "fork", backend = "pipe", stderr = "capture")]
fn null_deref_forked() -> usize {
    unsafe { libc::strlen(std::ptr::null()) }
}

#[test]
fn a_null_deref_reports_address_zero_not_mapped() {
    common::watchdog();
    for (name, result) in [
        ("null_deref_spawned", null_deref_spawned()),
        ("null_deref_forked", null_deref_forked()),
    ] {
        let e = nonzero(result);
        assert_eq!(e.signal(), Some(libc::SIGSEGV), "{e}");
        assert_eq!(e.fault_address(), Some(0), "{e}");
        assert_eq!(e.fault_code(), Some(1), "SEGV_MAPERR: {e}");
        assert_eq!(
            e.fault_description().as_deref(),
            Some("address 0x0 not mapped")
        );
        let expected = format!(
            "{name} (pid {}) was killed by SIGSEGV: segmentation fault, address 0x0 not mapped, after ",
            e.pid()
        );
        let shown = e.to_string();
        assert!(shown.starts_with(&expected), "{shown}");
        assert!(shown.contains(", peak RSS "), "{shown}");
        assert!(!e.is_stack_overflow() && !e.is_oom(), "{e}");
    }
}

/// Maps one page of a file, truncates the file, and touches the page: the
/// kernel answers with SIGBUS (`BUS_ADRERR`) at that address.
fn touch_truncated_mapping() -> u8 {
    let file = tempfile::tempfile().unwrap();
    file.set_len(4096).unwrap();
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // A raw write: a forked child's `eprintln!` goes to libtest's capture.
    let line = format!("mapped at {page:p}\n");
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    file.set_len(0).unwrap();
    unsafe { page.cast::<u8>().read_volatile() }
}

#[bombsquad(stderr = "capture")]
fn bus_error_spawned() -> u8 {
    touch_truncated_mapping()
}

#[bombsquad(start_method = "fork", stderr = "capture")]
fn bus_error_forked() -> u8 {
    touch_truncated_mapping()
}

#[test]
fn a_truncated_mapping_is_sigbus_at_the_mapped_address() {
    common::watchdog();
    for result in [bus_error_spawned(), bus_error_forked()] {
        let e = nonzero(result);
        assert_eq!(e.signal(), Some(libc::SIGBUS), "{e}");
        assert_eq!(e.fault_code(), Some(2), "BUS_ADRERR: {e}");
        let stderr = String::from_utf8_lossy(e.stderr_tail()).into_owned();
        let mapped = stderr.trim().strip_prefix("mapped at ").unwrap();
        let address = e.fault_address().expect("an address");
        assert_eq!(format!("{address:#x}"), mapped);
        assert!(
            e.to_string().contains(&format!(
                "bus error, nonexistent physical address at {mapped}"
            )),
            "{e}"
        );
    }
}

/// A real integer division by zero: `div` with a zero divisor traps.
#[cfg(target_arch = "x86_64")]
fn divide_by_zero() -> u64 {
    let quotient: u64;
    unsafe {
        std::arch::asm!(
            "div {divisor}",
            divisor = in(reg) std::hint::black_box(0u64),
            inout("rax") 1u64 => quotient,
            inout("rdx") 0u64 => _,
        );
    }
    quotient
}

#[cfg(target_arch = "x86_64")]
#[bombsquad]
fn divides_by_zero_spawned() -> u64 {
    divide_by_zero()
}

#[cfg(target_arch = "x86_64")]
#[bombsquad(start_method = "fork")]
fn divides_by_zero_forked() -> u64 {
    divide_by_zero()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn an_integer_division_by_zero_is_sigfpe_with_its_instruction() {
    common::watchdog();
    for result in [divides_by_zero_spawned(), divides_by_zero_forked()] {
        let e = nonzero(result);
        assert_eq!(e.signal(), Some(libc::SIGFPE), "{e}");
        assert_eq!(e.fault_code(), Some(1), "FPE_INTDIV: {e}");
        assert!(e.fault_address().is_some_and(|a| a != 0), "{e}");
        assert!(
            e.to_string()
                .contains("arithmetic exception, integer divide by zero at instruction 0x"),
            "{e}"
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[bombsquad(start_method = "fork")]
fn illegal_instruction() {
    unsafe { std::arch::asm!("ud2") };
}

#[cfg(target_arch = "x86_64")]
#[test]
fn ud2_is_sigill_with_its_instruction() {
    common::watchdog();
    let e = nonzero(illegal_instruction());
    assert_eq!(e.signal(), Some(libc::SIGILL), "{e}");
    assert_eq!(e.fault_code(), Some(2), "ILL_ILLOPN: {e}");
    assert!(e.fault_address().is_some(), "{e}");
    assert!(
        e.to_string().contains("illegal operand at instruction 0x"),
        "{e}"
    );
}

/// `raise` sends the signal (`SI_TKILL`): there is no faulting address, and
/// the child still dies by it (a raised SIGSEGV too, which std's handler
/// alone would have let pass).
#[bombsquad]
fn raises(signal: i32) {
    unsafe { libc::raise(signal) };
}

#[bombsquad(start_method = "fork")]
fn raises_forked(signal: i32) {
    unsafe { libc::raise(signal) };
}

#[test]
fn a_raised_signal_has_no_address() {
    common::watchdog();
    for signal in [libc::SIGFPE, libc::SIGSEGV] {
        for result in [raises(signal), raises_forked(signal)] {
            let e = nonzero(result);
            assert_eq!(e.signal(), Some(signal), "{e}");
            assert_eq!(e.fault_code(), Some(libc::SI_TKILL), "{e}");
            assert_eq!(e.fault_address(), None, "{e}");
            assert!(
                e.to_string()
                    .contains("sent by raise() or tkill(), no faulting address"),
                "{e}"
            );
        }
    }
}

#[bombsquad]
fn aborts() {
    std::process::abort();
}

#[bombsquad(start_method = "fork")]
fn aborts_forked() {
    std::process::abort();
}

#[test]
fn an_abort_sends_no_fault_record() {
    common::watchdog();
    for result in [aborts(), aborts_forked()] {
        let e = nonzero(result);
        assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
        assert_eq!((e.fault_code(), e.fault_address()), (None, None), "{e}");
        assert!(
            e.to_string()
                .contains("was killed by SIGABRT: aborted, after "),
            "{e}"
        );
    }
}

#[test]
fn the_record_survives_a_reply_the_crash_cut_short() {
    common::watchdog();
    // A pipe reply with a frame header that promises more than arrives,
    // then a segfault: the reply is unreadable, the fault is still known.
    let e = nonzero(
        bombsquad::Isolate::new()
            .backend(bombsquad::Backend::Pipe)
            .stderr(Stderr::Capture)
            .fork(|| -> usize {
                let fd = common::reply_fd_in_child();
                let header = common::frame_header(common::RETURN_FRAME, 100);
                unsafe { libc::write(fd, header.as_ptr().cast(), header.len()) };
                unsafe { libc::strlen(std::ptr::null()) }
            }),
    );
    assert_eq!(e.signal(), Some(libc::SIGSEGV), "{e}");
    assert_eq!(e.fault_address(), Some(0), "{e}");
}
