"""CPU seconds (user + system) used so far by a process and all its descendants.

Children that already exited count through the parent's cutime/cstime (PostgreSQL's
postmaster reaps its per-connection backends), live ones are read one by one.
"""

import os
import sys

TICKS = os.sysconf("SC_CLK_TCK")


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    return fields


def children(pid):
    out = []
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def tree_seconds(pid):
    try:
        f = stat(pid)
    except OSError:
        return 0.0
    total = sum(int(x) for x in f[11:15]) / TICKS  # utime stime cutime cstime
    for c in children(pid):
        total += tree_seconds(c)
    return total


if __name__ == "__main__":
    print(f"{sum(tree_seconds(int(p)) for p in sys.argv[1:]):.2f}")
