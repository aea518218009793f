"""The Markdown report of `make bench` (bench/run.py): the tables, as
bench/results/SIZE.md keeps them."""
import os
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


def ms(seconds):
    return f"{seconds * 1000:.0f}" if seconds < 10 else f"{seconds * 1000:,.0f}"


def summary(times):
    return f"{ms(statistics.median(times))} ({ms(min(times))}–{ms(max(times))})"


def mib(n):
    return f"{n / 2**20:,.1f}"


def io_tables(box, names, results, scenarios, maildir):
    """Bytes of the spool a cold login brought into the page cache, and
    bytes a deletion wrote to the disk, of each server (an mbox's: a
    Maildir's deletions move nothing)."""
    out = []
    cold = [s for s in scenarios if s.cold and s.name in results]
    if cold:
        out += ["", f"Cold rows: the spool and every file the server keeps for the user (its home; Dovecot's index "
                    f"and mail directories) evicted from the page cache with posix_fadvise before the login; bytes "
                    f"of the {mib(box.size)} MiB spool the session brought into the page cache (fincore before and "
                    f"after), MiB, median:", "", "| work | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for scenario in cold:
            rows = results[scenario.name]
            out.append(f"| {scenario.name} | " + " | ".join(
                mib(statistics.median(r[3]["read"] for r in rows[n])) if rows.get(n) else "n/a" for n in names) + " |")
    deleting = [s for s in scenarios if s.deleted(box.count) and s.name in results and not maildir]
    if deleting:
        out += ["", "Deleting rows: bytes that reached the disk (the device's count of sectors written; synced before "
                    "and after the session, the machine otherwise idle), MiB, median, against the bytes the deletion "
                    "moves (the kept mail after the first deleted message):", "",
                "| work | moved | " + " | ".join(names) + " | popd / moved |", "|---" * (len(names) + 3) + "|"]
        for scenario in deleting:
            rows, moved = results[scenario.name], box.moved(scenario.deleted(box.count))
            written = {n: statistics.median(r[3]["written"] for r in rows[n]) for n in names if rows.get(n)}
            ratio = f"{written['popd'] / moved:.2f}×" if moved and "popd" in written else "n/a"
            out.append(f"| {scenario.name} | {mib(moved)} | " + " | ".join(
                mib(written[n]) if n in written else "n/a" for n in names) + f" | {ratio} |")
    return out


def revision():
    run = subprocess.run(["git", "-C", TOP, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return run.stdout.strip() or "an unknown revision"


def targets(paired, scenarios):
    """popd's rows against the floors the issue sets them (issue 8), each
    ratio the median of the rounds' ratios (popd and its floor timed in the
    same round)."""
    rows = []
    for scenario in scenarios:
        pairs = paired.get(scenario.name)
        if not pairs:
            continue
        ratios = sorted(p / f for p, f in pairs)
        popd, floor = (statistics.median(x) for x in zip(*pairs))
        rows.append(f"| {scenario.name} | {scenario.floor} | {ms(popd)} | {ms(floor)} | "
                    f"{statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f}) | ≤ {scenario.limit}× |")
    if not rows:
        return []
    return ["", "popd against the floors the targets name, timed in the same rounds (ms, medians; the ratio is "
                "the median of the rounds' ratios, min–max):", "",
            "| work | floor | popd | floor | popd / floor | target |", "|---|---|---|---|---|---|"] + rows


def report(args, box, servers, missing, results, floors, paired, scenarios, pam_peak_kib):
    names = [s.name for s in servers]
    table = args.size + ("-maildir" if args.format == "maildir" else "")
    out = [f"# popd benchmark: {args.size} mailbox" + (", as a Maildir" if args.format == "maildir" else ""), "",
           f"{box.count:,} messages, {box.size / 1e6:,.0f} MB; {args.runs} runs per server and scenario "
           f"({3 * args.runs} for login + STAT and UIDL, which cost little), alternating; wall time in ms as median (min–max), measured by the client from connect to the "
           f"server's close after QUIT. Command: `make bench SIZE={args.size}"
           f"{' FORMAT=maildir' if args.format == 'maildir' else ''}`. Machine: "
           f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; popd at {revision()}.", ""]
    for name, why in missing.items():
        out.append(f"**{name}: missing** ({why})")
    out += ["", "| work | " + " | ".join(names) + " | popd / fastest peer |", "|---" * (len(names) + 2) + "|"]
    for scenario, rows in results.items():
        cells, medians = [], {}
        for name in names:
            runs = rows.get(name)
            if not runs:
                cells.append("n/a")
                continue
            medians[name] = statistics.median(r[0] for r in runs)
            cells.append(summary([r[0] for r in runs]))
        peers = [v for k, v in medians.items() if k != "popd"]
        ratio = f"{medians['popd'] / min(peers):.2f}×" if peers and "popd" in medians else "n/a"
        out.append(f"| {scenario} | " + " | ".join(cells) + f" | {ratio} |")
    out += ["", "Server CPU time (user + system, ms, median) and peak RSS in MiB of each kind of server "
            "process (VmHWM sampled every 5 ms): root (popd's monitor, which runs PAM; popa3d's parent; Dovecot's "
            "auth), helper (popd's pre-auth and TLS relay, popa3d's and Dovecot's login processes) and session (the "
            "process that runs as the user and holds the mailbox):", "",
            "| work | " + " | ".join(f"{n} CPU | {n} RSS root / helper / session" for n in names) + " |",
            "|---" * (2 * len(names) + 1) + "|"]
    for scenario, rows in results.items():
        cells = []
        for name in names:
            runs = rows.get(name)
            if not runs:
                cells += ["n/a", "n/a"]
                continue
            peaks = {role: max(r[2].get(role, 0) for r in runs) for role in ("root", "helper", "session")}
            cells += [ms(statistics.median(r[1] for r in runs)),
                      " / ".join(f"{peaks[role] / 1024:.1f}" if peaks[role] else "–" for role in peaks)]
        out.append(f"| {scenario} | " + " | ".join(cells) + " |")
    out += ["", "Floors:", "", "| floor | ms |", "|---|---|"]
    out += [f"| {name} | {summary(times)} |" for name, times in floors.items()]
    out += io_tables(box, names, results, scenarios, args.format == "maildir")
    out += targets(paired, scenarios)
    if pam_peak_kib:
        out += ["", f"PAM alone (pamtester, the same service and account) peaks at {max(pam_peak_kib) / 1024:.1f} MiB: "
                    "the memory of the password hash (yescrypt on Debian 12), which every process that checks a "
                    "password pays, popd's monitor, Dovecot's auth and popa3d's parent alike."]
    session_rss = max((r[2].get("session", 0) for rows in results.values() for r in rows.get("popd") or []),
                      default=0)
    if session_rss:
        out += ["", f"popd's session process (the one that holds the mailbox) peaked at {session_rss / 1024:.1f} MiB: "
                    f"{session_rss * 1024 / box.count:,.0f} bytes per message of the mailbox, all costs included."]
    os.makedirs(f"{HERE}/results", exist_ok=True)
    path = f"{HERE}/results/{table}.md"
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))
    print(f"\nwritten to {path}")
