//! Concurrent inserts of one unique value from many transactions on several processing
//! nodes: exactly one commits, the others fail with a serialization failure (the claim was
//! written concurrently) or a unique violation (the claim was already visible), and the
//! store ends with exactly one row holding the value. Repeated over many rounds, with all
//! transactions racing to commit at once and with free-running ones.

mod common;

use std::ops::Bound;
use std::sync::Arc;

use common::*;
use shmdb_processing_node::txn::{Engine, TxnError};
use tokio::sync::Barrier;

const ENGINES: u64 = 3;
const PER_ENGINE: usize = 4;
const ROUNDS: i64 = 12;

/// How one contender's insert ended.
#[derive(Debug)]
enum Outcome {
    Committed(i64),
    Conflict,
    Duplicate,
}

/// Inserts `users(id, email)`; waits at `barrier` (if any) between the insert and the
/// commit so that every contender's try-commit overlaps.
async fn contend(
    engine: Arc<Engine>,
    id: i64,
    email: String,
    barrier: Option<Arc<Barrier>>,
) -> anyhow::Result<Outcome> {
    let u = users();
    let mut tx = engine.begin().await?;
    let inserted = tx.insert(&u, vec![int(id), text(&email)]).await;
    if let Some(barrier) = barrier {
        barrier.wait().await;
    }
    let result = match inserted {
        Ok(()) => tx.commit().await,
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    };
    match result {
        Ok(()) => Ok(Outcome::Committed(id)),
        Err(TxnError::SerializationFailure) => Ok(Outcome::Conflict),
        Err(TxnError::UniqueViolation { .. }) => Ok(Outcome::Duplicate),
        Err(e) => Err(e.into()),
    }
}

async fn rounds(synchronized: bool) -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let engines: Vec<Arc<Engine>> = (1..=ENGINES)
        .map(|n| cluster.engine(n))
        .collect::<Result<_, _>>()?;
    let u = users();
    let contenders = ENGINES as usize * PER_ENGINE;
    let mut next_id = 0i64;
    for round in 0..ROUNDS {
        let email = format!("round{round}@example.com");
        let barrier = synchronized.then(|| Arc::new(Barrier::new(contenders)));
        let mut tasks = Vec::new();
        for engine in &engines {
            for _ in 0..PER_ENGINE {
                next_id += 1;
                tasks.push(tokio::spawn(contend(
                    engine.clone(),
                    next_id,
                    email.clone(),
                    barrier.clone(),
                )));
            }
        }
        let mut winners = Vec::new();
        let (mut conflicts, mut duplicates) = (0, 0);
        for task in tasks {
            match task.await?? {
                Outcome::Committed(id) => winners.push(id),
                Outcome::Conflict => conflicts += 1,
                Outcome::Duplicate => duplicates += 1,
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one insert of {email} must commit ({conflicts} conflicts, {duplicates} duplicates)"
        );
        // The store agrees: one row holds the value, by index and by primary key.
        let mut tx = engines[round as usize % engines.len()].begin().await?;
        let holders = tx
            .index_scan(
                &u,
                &u.indexes[0],
                Bound::Included(&[text(&email)]),
                Bound::Included(&[text(&email)]),
                0,
            )
            .await?;
        assert_eq!(
            holders,
            vec![vec![int(winners[0]), text(&email)]],
            "round {round}"
        );
        let all = tx.scan(&u, Bound::Unbounded, Bound::Unbounded, 0).await?;
        assert_eq!(
            all.len(),
            round as usize + 1,
            "round {round}: losers left rows behind"
        );
        tx.commit().await?;
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_unique_value_racing_commits_exactly_one_wins() -> anyhow::Result<()> {
    rounds(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_unique_value_free_running_exactly_one_wins() -> anyhow::Result<()> {
    rounds(false).await
}
