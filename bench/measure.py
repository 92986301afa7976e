"""Time commands that each close one build, alternating run by run, and print the figures.

Usage: measure.py RUNS NAME=COMMAND [NAME=COMMAND ...]   (the first is the reference)

Each command runs once as a warm-up, then RUNS times, the commands taking turns so that a
slow moment of the machine falls on all of them alike. Wall time is measured around the whole
child, the same small overhead for every tool. Peak RSS comes from GNU time (/usr/bin/time),
which forks the command from its own small process: Linux counts the memory a process had
before exec into its peak, so forking straight from this Python process would report Python's
size instead. A run that exits non-zero stops the benchmark.
"""

import statistics
import subprocess
import sys
import tempfile
import time


def run_once(command):
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, "/bin/sh", "-c", "exec " + command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{command!r} exited {done.returncode}: {done.stderr.decode()}")
        kib = int(peak.read().split()[-1])
    return wall * 1000, kib / 1024  # ms, MiB


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main():
    runs = int(sys.argv[1])
    tools = [arg.split("=", 1) for arg in sys.argv[2:]]
    walls = {name: [] for name, _ in tools}
    rss = {name: [] for name, _ in tools}
    for name, command in tools:
        run_once(command)
    for _ in range(runs):
        for name, command in tools:
            wall, peak = run_once(command)
            walls[name].append(wall)
            rss[name].append(peak)
    reference = tools[0][0]
    base = statistics.median(walls[reference])
    print(f"{'tool':<28} {'median':>9} {'p90':>9} {'peak RSS':>9} {'vs ' + reference:>22}")
    for name, _ in tools:
        median = statistics.median(walls[name])
        ratio = "1.0x" if name == reference else f"{median / base:.1f}x slower"
        print(
            f"{name:<28} {median:>7.2f}ms {percentile(walls[name], 90):>7.2f}ms "
            f"{max(rss[name]):>6.1f}MiB {ratio:>22}"
        )
    print(f"({runs} runs each after a warm-up, alternating; wall time includes process start)")


main()
