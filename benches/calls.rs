//! The hot paths, with criterion: a trivial call in each start method and
//! to a warm worker (`pool = 1`, `Worker<T>`), blocking and awaited on
//! tokio, a 1 MiB `Vec<u8>` result on each backend and from a warm worker
//! (through its arena), and the codec of a 1 MiB `Vec<u8>`. `examples/compare` measures the same against the kernel's
//! floors; these track regressions.
//!
//! ```text
//! taskset -c 0 cargo bench --bench calls
//! ```
//!
//! Pinned to one CPU: unpinned, each wake-up may cross to the other vCPU,
//! and on this 2-vCPU VM the warm rows then read 4-6x slower and vary
//! from run to run.

use std::hint::black_box;
use std::time::Duration;

use bombsquad::__private::{BytesCodec as _, CodecTag};
use bombsquad::{Task, Worker, bombsquad};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MIB: usize = 1 << 20;

#[bombsquad(start_method = "fork", backend = "pipe")]
fn fork_trivial() -> u64 {
    42
}

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn spawn_trivial() -> u64 {
    42
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn forkserver_trivial() -> u64 {
    42
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
async fn forkserver_trivial_awaited() -> u64 {
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

#[bombsquad(pool = 1)]
fn warm_trivial(x: u64) -> u64 {
    x + 1
}

#[bombsquad(pool = 1)]
async fn warm_trivial_awaited(x: u64) -> u64 {
    x + 1
}

#[bombsquad(pool = 1)]
fn warm_bytes(len: usize) -> Vec<u8> {
    vec![7; len]
}

#[derive(Debug, Default)]
struct Increment;

#[bombsquad]
impl Task for Increment {
    type Input = u64;
    type Output = u64;
    type Error = String;

    fn run(&mut self, x: u64) -> Result<u64, String> {
        Ok(x + 1)
    }
}

fn trivial(c: &mut Criterion) {
    let mut group = c.benchmark_group("trivial call");
    group.bench_function("fork", |b| b.iter(|| fork_trivial().unwrap()));
    group.bench_function("spawn", |b| b.iter(|| spawn_trivial().unwrap()));
    group.bench_function("forkserver", |b| b.iter(|| forkserver_trivial().unwrap()));
    group.bench_function("warm, pool = 1", |b| {
        b.iter(|| warm_trivial(black_box(41)).unwrap());
    });
    let worker = Worker::<Increment>::spawn().unwrap();
    group.bench_function("warm, Worker<T>", |b| {
        b.iter(|| worker.call(black_box(41)).unwrap().unwrap());
    });
    group.finish();
}

/// The awaited calls, each iteration's calls awaited in one task (an
/// async caller is in its runtime already): against the blocking rows of
/// "trivial call".
fn awaited(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let mut group = c.benchmark_group("trivial call, awaited on tokio");
    group.bench_function("forkserver", |b| {
        b.iter_custom(|calls| {
            runtime.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..calls {
                    black_box(forkserver_trivial_awaited().await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("warm, pool = 1", |b| {
        b.iter_custom(|calls| {
            runtime.block_on(async {
                let start = std::time::Instant::now();
                for x in 0..calls {
                    black_box(warm_trivial_awaited(black_box(x)).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn mebibyte(c: &mut Criterion) {
    let mut group = c.benchmark_group("1 MiB Vec<u8> result, fork mode");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("file", |b| b.iter(|| fork_file(black_box(MIB)).unwrap()));
    group.bench_function("pipe", |b| b.iter(|| fork_pipe(black_box(MIB)).unwrap()));
    group.bench_function("shm", |b| b.iter(|| fork_shm(black_box(MIB)).unwrap()));
    group.finish();
    let mut group = c.benchmark_group("1 MiB Vec<u8> result, warm");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("pool = 1 (arena)", |b| {
        b.iter(|| warm_bytes(black_box(MIB)).unwrap());
    });
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
    targets = trivial, awaited, mebibyte, codec
}
criterion_main!(benches);
