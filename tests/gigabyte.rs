//! A 1 GiB result through each backend and start method. Its own binary,
//! one test, so the peaks do not add up with other tests.

mod common;

use bombsquad::bombsquad;

const GIB: usize = 1 << 30;

#[bombsquad(backend = "file")]
fn spawned_file() -> Vec<u8> {
    gigabyte()
}

#[bombsquad(backend = "pipe")]
fn spawned_pipe() -> Vec<u8> {
    gigabyte()
}

#[bombsquad(backend = "shm")]
fn spawned_shm() -> Vec<u8> {
    gigabyte()
}

#[bombsquad(start_method = "fork", backend = "file")]
fn forked_file() -> Vec<u8> {
    gigabyte()
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn forked_pipe() -> Vec<u8> {
    gigabyte()
}

#[bombsquad(start_method = "fork", backend = "shm")]
fn forked_shm() -> Vec<u8> {
    gigabyte()
}

fn gigabyte() -> Vec<u8> {
    let mut bytes = vec![7u8; GIB];
    bytes[0] = 1;
    bytes[GIB - 1] = 2;
    bytes
}

#[test]
fn a_gigabyte_result_arrives_whole_on_every_backend() {
    common::watchdog();
    for call in [
        spawned_file,
        spawned_pipe,
        spawned_shm,
        forked_file,
        forked_pipe,
        forked_shm,
    ] {
        let bytes = call().unwrap();
        assert_eq!(bytes.len(), GIB);
        assert_eq!(
            (bytes[0], bytes[1], bytes[GIB / 2], bytes[GIB - 1]),
            (1, 7, 7, 2)
        );
    }
}
