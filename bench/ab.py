#!/usr/bin/env python3
"""Two or more builds of popd side by side on one row of `make bench`:
each DIR holds a `popd` binary (a `git worktree` of another commit, built
with `make popd`). The builds run in turn, round by round, so that the
machine's slow and quick phases hit all alike; rows with RETR also time
the client's ceiling in every round and give each build's median ratio to
it. As root, on the bench's accounts and spools (run `make bench` once).

  bench/ab.py [--size large] [--rounds 5] [--scenario "UIDL"] [--perf FILE] DIR...

--perf records the last timed session of each build with `perf record -a
-g` into FILE.DIR-NUMBER (read it with `perf report --comm popd`).
"""
import argparse
import statistics
import subprocess
import sys
import time

import client
import run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenario", default="RETR every message, pipelined")
    parser.add_argument("--perf", default="")
    parser.add_argument("builds", nargs="+")
    args = parser.parse_args()
    pristine = f"{run.WORK}/{args.size}.mbox"
    box = run.Mailbox(pristine)
    scenario = next((s for s in run.scenarios() if s.name == args.scenario), None)
    if scenario is None:
        sys.exit("scenarios: " + "; ".join(s.name for s in run.scenarios()))
    servers = []
    for build in args.builds:
        run.TOP = build
        servers.append(run.Popd())
        servers[-1].restore(pristine)
    retr = "RETR" in scenario.name
    retr_bytes = sum(len(b) + 5 + 20 for b in box.bodies)
    times = {b: [] for b in args.builds}
    cpu = {b: [] for b in args.builds}
    peak = {b: 0 for b in args.builds}
    ceiling = []
    timed_session = client.session
    for _ in range(args.rounds):
        for number, (build, server) in enumerate(zip(args.builds, servers)):
            if args.perf:
                client.session = recorded(timed_session, f"{args.perf}.{number}")
            elapsed, used, peaks = run.timed_run(scenario, server, box)
            client.session = timed_session
            times[build].append(elapsed * 1000)
            cpu[build].append(used * 1000)
            peak[build] = max(peak[build], peaks.get("session", 0) / 1024)
        if retr:
            ceiling.append(run.ceiling(pristine, retr_bytes, scenario.tls, 1)[0] * 1000)
    print(f"{scenario.name}, {args.rounds} rounds; ms, median [each round]")
    for build in args.builds:
        line = (f"{build}: {statistics.median(times[build]):.0f} {[round(t) for t in times[build]]}, "
                f"CPU {statistics.median(cpu[build]):.0f}, session peak {peak[build]:.1f} MiB")
        if ceiling:
            ratios = [t / c for t, c in zip(times[build], ceiling)]
            line += f", {statistics.median(ratios):.2f}x the client's ceiling"
        print(line)
    if ceiling:
        print(f"client ceiling: {statistics.median(ceiling):.0f} {[round(c) for c in ceiling]}")


def recorded(session, path):
    """client.session, with the second call (timed_run's timed session,
    after its warm-up login) under perf record."""
    calls = []

    def wrapper(port, commands, **kw):
        calls.append(commands)
        if len(calls) != 2:
            return session(port, commands, **kw)
        perf = subprocess.Popen(["perf", "record", "-a", "-g", "-o", path], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            return session(port, commands, **kw)
        finally:
            perf.send_signal(2)
            perf.wait()
    return wrapper


if __name__ == "__main__":
    main()
