"""Markdown tables from one or more results.jsonl files (one JSON line per measured system)."""

import json
import sys


def rows(paths):
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def main():
    rs = list(rows(sys.argv[1:]))
    print("| system | tpmC | tpmTotal | committed | errors (abort rate) | server CPU ms / txn | store requests / txn | load s | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rs:
        rate = "-" if r["abort_rate"] is None else f"{100 * r['abort_rate']:.1f} %"
        print(
            f"| {r['label']} | {fmt(r['tpmC'])} | {fmt(r['tpmTotal'])} | {r['committed']:,} | "
            f"{r['errors']:,} ({rate}) | {fmt(r['cpu_ms_per_txn'], 2)} | {fmt(r.get('store_requests_per_txn'))} | "
            f"{r['load_seconds']:.0f} | {r['check']} |"
        )
    print()
    print("| system | type | count | errors | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rs:
        for t, v in r["types"].items():
            print(
                f"| {r['label']} | {t} | {v['count']:,} | {v['errors']:,} | {fmt(v['p50_ms'])} | "
                f"{fmt(v['p90_ms'])} | {fmt(v['p99_ms'])} | {fmt(v['max_ms'])} |"
            )


if __name__ == "__main__":
    main()
