"""Store requests served so far by the storage nodes of `shmdb up` (the
`shmdb_storage_request_seconds_count` series of every node's /metrics), or 0 when there
are none (PostgreSQL runs)."""

import re
import sys
import urllib.request

total = 0
for port in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        continue
    for m in re.finditer(r"^shmdb_storage_request_seconds_count\{[^}]*\} (\S+)$", text, re.M):
        total += float(m.group(1))
print(int(total))
