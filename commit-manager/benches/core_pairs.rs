//! In-process start+commit pairs per second on one thread, through the commit manager's
//! state machine (`shmdb_commit_manager::core::Core`) exactly as the service drives it:
//! every commit waits for a publish, emulated here by preparing the state record (the real
//! encoding work) and marking it durable every `GROUP` commits — what one store write per
//! group of commits does in the running manager — plus a merge round every 5,000 pairs.
//!
//! Run: `taskset -c 0 cargo bench -p shmdb-commit-manager --bench core_pairs`
//! (optional arguments: pairs, group size).

use std::hint::black_box;
use std::time::{Duration, Instant};

use shmdb_commit_manager::core::{Core, CoreConfig, TidBlock};

fn run(pairs: u64, group: u64, abort_every: u64) -> (f64, u64, u64) {
    let mut core = Core::new(
        CoreConfig {
            manager_id: 1,
            window: 1 << 21,
            heartbeat_timeout: Duration::from_secs(3),
            max_batch: 4096,
        },
        0,
    );
    core.add_leased(TidBlock {
        start: 1,
        end: 1 << 40,
    });
    let batch = core.prepare_flush("bench", 0);
    core.flush_succeeded(&batch);
    let ticket = core.merge_start();
    core.apply_merge(ticket, None, &[]);
    let mut publishes = 0u64;
    let mut max_snapshot = 0u64;
    let started = Instant::now();
    for i in 0..pairs {
        let (tid, snapshot, lav) = match core.start(1, Instant::now()) {
            Ok(grant) => grant,
            Err(e) => panic!("start failed: {e}"),
        };
        black_box((&snapshot, lav));
        if abort_every > 0 && i % abort_every == 0 {
            let _ = black_box(core.abort(tid));
        } else {
            let _ = black_box(core.commit(tid));
        }
        if i % group == group - 1 {
            let batch = core.prepare_flush("bench", 0);
            black_box(&batch.state);
            core.flush_succeeded(&batch);
            publishes += 1;
            max_snapshot = max_snapshot.max(snapshot.snapshot().encoded_len() as u64);
        }
        if i % 5_000 == 4_999 {
            let ticket = core.merge_start();
            core.apply_merge(ticket, None, &[]);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (pairs as f64 / secs, publishes, max_snapshot)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let pairs: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let group: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    // Warm up allocator and caches.
    run(pairs / 10, group, 0);
    for (label, abort_every) in [
        ("start+commit", 0u64),
        ("start+commit, 1 in 10 aborted", 10),
    ] {
        let (rate, publishes, snapshot) = run(pairs, group, abort_every);
        println!(
            "core {label}: {pairs} pairs, one publish per {group} commits ({publishes} publishes): {:.0} pairs/s (largest snapshot {snapshot} bytes)",
            rate
        );
    }
}
