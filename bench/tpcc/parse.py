"""Turns one go-tpc `tpcc run` log into one JSON line for results.jsonl.

Reads the `[Summary]` lines (per transaction type, and `<TYPE>_ERR` for failed ones) and
the `tpmC:` line; adds the CPU seconds of the server over the run and the check outcome.
"""

import argparse
import json
import re

SUMMARY = re.compile(r"^\[Summary\]\s+(\S+)\s+-\s+(.*)$")
TPMC = re.compile(r"tpmC:\s*([\d.]+),\s*tpmTotal:\s*([\d.]+),\s*efficiency:\s*([\d.]+)%?")


def fields(rest):
    out = {}
    for part in rest.split(","):
        if ":" in part:
            k, v = part.split(":", 1)
            try:
                out[k.strip()] = float(v.strip())
            except ValueError:
                pass
    return out


def main():
    ap = argparse.ArgumentParser()
    for name in ["label", "run-log", "check", "duration"]:
        ap.add_argument(f"--{name}", required=True)
    for name in ["cpu-seconds", "load-seconds", "store-requests"]:
        ap.add_argument(f"--{name}", type=float, required=True)
    for name in ["warehouses", "threads"]:
        ap.add_argument(f"--{name}", type=int, required=True)
    a = ap.parse_args()
    types, tpmc, tpm_total = {}, 0.0, 0.0
    with open(a.run_log) as f:
        for line in f:
            m = SUMMARY.match(line.strip())
            if m:
                types[m.group(1)] = fields(m.group(2))
            m = TPMC.search(line)
            if m:
                tpmc, tpm_total = float(m.group(1)), float(m.group(2))
    ok = sum(v.get("Count", 0) for k, v in types.items() if not k.endswith("_ERR"))
    err = sum(v.get("Count", 0) for k, v in types.items() if k.endswith("_ERR"))
    per_type = {
        k: {
            "count": int(v.get("Count", 0)),
            "errors": int(types.get(k + "_ERR", {}).get("Count", 0)),
            "p50_ms": v.get("50th(ms)"),
            "p90_ms": v.get("90th(ms)"),
            "p99_ms": v.get("99th(ms)"),
            "max_ms": v.get("Max(ms)"),
            "avg_ms": v.get("Avg(ms)"),
        }
        for k, v in sorted(types.items())
        if not k.endswith("_ERR")
    }
    print(
        json.dumps(
            {
                "label": a.label,
                "warehouses": a.warehouses,
                "threads": a.threads,
                "duration": a.duration,
                "load_seconds": a.load_seconds,
                "tpmC": tpmc,
                "tpmTotal": tpm_total,
                "new_order_count": per_type.get("NEW_ORDER", {}).get("count", 0),
                "committed": int(ok),
                "errors": int(err),
                "abort_rate": err / (ok + err) if ok + err else None,
                "cpu_seconds": a.cpu_seconds,
                "cpu_ms_per_txn": 1000 * a.cpu_seconds / ok if ok else None,
                "store_requests_per_txn": a.store_requests / (ok + err) if a.store_requests and ok + err else None,
                "check": a.check,
                "types": per_type,
            }
        )
    )


if __name__ == "__main__":
    main()
