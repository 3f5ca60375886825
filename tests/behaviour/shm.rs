//! The shm backend against a child that tampers with its memfd (docs/FAULTS.md
//! I7): the parent seals the memfd after the child exits and only then maps
//! it, so a shrunk or still-mapped file is an error, never a SIGBUS.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the children call libc to tamper with the memfd on purpose"
)]

use crate::common;

use bombsquad::{Error, bombsquad};

#[bombsquad(start_method = "fork", backend = "shm")]
fn shrinks_its_reply_fork() -> Vec<u8> {
    common::write_then_truncate(4096)
}

#[bombsquad(backend = "shm")]
fn shrinks_its_reply_spawn() -> Vec<u8> {
    common::write_then_truncate(4096)
}

#[bombsquad(start_method = "fork", backend = "shm")]
fn empties_its_reply() -> Vec<u8> {
    common::write_then_truncate(0)
}

/// A grandchild maps the memfd for writing and keeps the mapping: the
/// parent cannot seal it, so it must not map and trust it.
#[bombsquad(start_method = "fork", backend = "shm")]
fn grandchild_keeps_a_writable_mapping() -> Vec<u8> {
    let fd = common::reply_fd_in_child();
    assert_eq!(unsafe { libc::ftruncate(fd, 4096) }, 0);
    match unsafe { libc::fork() } {
        0 => {
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED);
            // Leaves its process group so the end of the call does not kill
            // it before the parent tries to seal.
            unsafe { libc::setpgid(0, 0) };
            unsafe { libc::sleep(3) };
            unsafe { libc::_exit(0) }
        }
        _ => {
            // Long enough for the grandchild to map and leave the group.
            std::thread::sleep(std::time::Duration::from_millis(300));
            unsafe { libc::_exit(0) }
        }
    }
}

#[test]
fn a_shrunk_reply_is_a_protocol_error_not_a_sigbus() {
    common::watchdog();
    for call in [shrinks_its_reply_fork, shrinks_its_reply_spawn] {
        let message = common::protocol_error(call());
        assert_eq!(
            message,
            format!(
                "truncated frame: {} of {} payload bytes arrived",
                4096 - common::HEADER_LEN,
                common::TRUNCATED_FRAME_LEN
            )
        );
    }
}

#[test]
fn an_emptied_reply_is_no_payload() {
    common::watchdog();
    assert!(matches!(
        empties_its_reply(),
        Err(Error::ZeroExitcodeWithoutPayload { .. })
    ));
}

#[test]
fn a_reply_mapped_for_writing_by_another_process_is_refused() {
    common::watchdog();
    let message = common::protocol_error(grandchild_keeps_a_writable_mapping());
    assert!(message.starts_with("seal the reply memfd:"), "{message}");
}
