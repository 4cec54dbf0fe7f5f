#!/usr/bin/env python3
"""Read wsgate_chat_phase_seconds from a /metrics scrape (stdin or a URL)
and print each phase's count, mean and p50/p90/p99 (linear within a
bucket, as Prometheus' histogram_quantile does)."""
import re
import sys
import urllib.request

ORDER = ["handle", "queue", "apply", "commit", "wakeup", "first_write", "fanout", "total"]


def parse(text):
    buckets, sums = {}, {}
    for line in text.splitlines():
        m = re.match(r'wsgate_chat_phase_seconds_bucket\{.*phase="(\w+)".*le="([^"]+)"\} (\d+)', line)
        if m:
            le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
            buckets.setdefault(m.group(1), []).append((le, int(m.group(3))))
        m = re.match(r'wsgate_chat_phase_seconds_sum\{.*phase="(\w+)".*\} ([0-9.]+)', line)
        if m:
            sums[m.group(1)] = float(m.group(2))
    return buckets, sums


def quantile(q, bs):
    total = bs[-1][1]
    if total == 0:
        return float("nan")
    rank, prev_le, prev_c = q * total, 0.0, 0
    for le, c in bs:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1)
        prev_le, prev_c = le, c
    return prev_le


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if src == "-" else urllib.request.urlopen(src, timeout=10).read().decode()
    buckets, sums = parse(text)
    print(f"{'phase':12s} {'count':>8s} {'mean ms':>8s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s}")
    for ph in ORDER:
        bs = buckets.get(ph)
        if not bs:
            continue
        n = bs[-1][1]
        mean = sums.get(ph, 0) / n * 1e3 if n else float("nan")
        print(f"{ph:12s} {n:8d} {mean:8.2f} " + " ".join(f"{quantile(q, bs) * 1e3:8.2f}" for q in (0.5, 0.9, 0.99)))


if __name__ == "__main__":
    main()
