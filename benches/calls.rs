//! The hot paths, with criterion: a trivial call in each start method, a
//! 1 MiB `Vec<u8>` result on each backend, and the codec of a 1 MiB
//! `Vec<u8>`. `examples/compare` measures the same against the kernel's
//! floors; these track regressions.
//!
//! ```text
//! cargo bench --bench calls
//! ```

use std::hint::black_box;
use std::time::Duration;

use bombsquad::__private::{BytesCodec as _, CodecTag};
use bombsquad::bombsquad;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MIB: usize = 1 << 20;

#[bombsquad(start_method = "fork", backend = "pipe")]
fn fork_trivial() -> u64 {
    42
}

#[bombsquad(backend = "pipe")]
fn spawn_trivial() -> u64 {
    42
}

#[bombsquad(start_method = "fork", backend = "file")]
fn fork_file(len: usize) -> Vec<u8> {
    vec![7; len]
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn fork_pipe(len: usize) -> Vec<u8> {
    vec![7; len]
}

#[bombsquad(start_method = "fork", backend = "shm")]
fn fork_shm(len: usize) -> Vec<u8> {
    vec![7; len]
}

fn trivial(c: &mut Criterion) {
    let mut group = c.benchmark_group("trivial call");
    group.bench_function("fork", |b| b.iter(|| fork_trivial().unwrap()));
    group.bench_function("spawn", |b| b.iter(|| spawn_trivial().unwrap()));
    group.finish();
}

fn mebibyte(c: &mut Criterion) {
    let mut group = c.benchmark_group("1 MiB Vec<u8> result, fork mode");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("file", |b| b.iter(|| fork_file(black_box(MIB)).unwrap()));
    group.bench_function("pipe", |b| b.iter(|| fork_pipe(black_box(MIB)).unwrap()));
    group.bench_function("shm", |b| b.iter(|| fork_shm(black_box(MIB)).unwrap()));
    group.finish();
}

fn codec(c: &mut Criterion) {
    let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
    let value = vec![7u8; MIB];
    let encoded = codec.encode(&value).unwrap();
    let mut group = c.benchmark_group("codec, 1 MiB Vec<u8>");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("encode", |b| {
        b.iter(|| codec.encode(black_box(&value)).unwrap())
    });
    group.bench_function("decode", |b| {
        b.iter_batched(
            || encoded.clone(),
            |encoded| codec.decode(encoded).unwrap(),
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = trivial, mebibyte, codec
}
criterion_main!(benches);
