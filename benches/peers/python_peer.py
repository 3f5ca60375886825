"""Python bombsquad 0.1.2, measured for examples/compare (section peers).

Prints one line per case: name<TAB>median seconds<TAB>floor<TAB>bytes, where
floor names the Rust floor of the same run to divide by ("fork" or
"reexec") and bytes is the result size. argv[1] scales the rounds.
"""

import statistics
import sys
import time

from bombsquad import bombsquad

BIG = 64 << 20


@bombsquad(start_method="fork", backend="file")
def fork_file():
    return 42


@bombsquad(start_method="fork", backend="queue")
def fork_queue():
    return 42


@bombsquad(start_method="spawn", backend="file")
def spawn_file():
    return 42


@bombsquad(start_method="fork", backend="file")
def big_fork_file(n):
    return b"\x07" * n


@bombsquad(start_method="fork", backend="queue")
def big_fork_queue(n):
    return b"\x07" * n


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rounds = lambda n: max(1, round(n * scale))
    cases = [
        ("Python bombsquad 0.1.2 fork/file", "fork", 8, fork_file, (), rounds(10), 5),
        ("Python bombsquad 0.1.2 fork/queue", "fork", 8, fork_queue, (), rounds(10), 5),
        ("Python bombsquad 0.1.2 spawn/file", "reexec", 8, spawn_file, (), rounds(3), 2),
        ("Python bombsquad 0.1.2 fork/file 64 MiB bytes", "pipe64", BIG, big_fork_file, (BIG,), rounds(3), 1),
        ("Python bombsquad 0.1.2 fork/queue 64 MiB bytes", "pipe64", BIG, big_fork_queue, (BIG,), rounds(3), 1),
    ]
    samples = {name: [] for name, *_ in cases}
    for r in range(max(c[5] for c in cases)):
        for name, _, _, fn, args, n_rounds, block in cases:
            if r >= n_rounds:
                continue
            for _ in range(block):
                start = time.perf_counter()
                fn(*args)
                samples[name].append(time.perf_counter() - start)
    for name, floor, size, *_ in cases:
        print(f"{name}\t{statistics.median(samples[name]):.9f}\t{floor}\t{size}")


if __name__ == "__main__":
    main()
