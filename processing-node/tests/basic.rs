//! Basic transaction life-cycle across two processing nodes sharing the store.

mod common;

use std::ops::Bound;

use common::*;
use shmdb_processing_node::txn::TxnError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_read_update_delete_across_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let a = cluster.engine(1)?;
    let b = cluster.engine(2)?;
    let t = accounts();

    let mut tx = a.begin().await?;
    tx.insert(&t, vec![int(1), text("ann"), int(100)]).await?;
    tx.insert(&t, vec![int(2), text("bob"), int(50)]).await?;
    // Own writes are visible before commit.
    assert_eq!(
        tx.get(&t, &[int(1)]).await?,
        Some(vec![int(1), text("ann"), int(100)])
    );
    assert!(matches!(
        tx.insert(&t, vec![int(1), text("dup"), int(0)]).await,
        Err(TxnError::UniqueViolation { .. })
    ));
    tx.commit().await?;

    let mut tx = b.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(2)]).await?,
        Some(vec![int(2), text("bob"), int(50)])
    );
    tx.update(&t, &[int(2)], vec![int(2), text("bob"), int(60)])
        .await?;
    let rows = tx.scan(&t, Bound::Unbounded, Bound::Unbounded, 0).await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][2], int(60));
    let by_owner = tx
        .index_scan(
            &t,
            &t.indexes[0],
            Bound::Included(&[text("bob")]),
            Bound::Included(&[text("bob")]),
            0,
        )
        .await?;
    assert_eq!(by_owner, vec![vec![int(2), text("bob"), int(60)]]);
    tx.commit().await?;

    let mut tx = a.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(2)]).await?.map(|r| r[2].clone()),
        Some(int(60))
    );
    assert!(tx.delete(&t, &[int(1)]).await?);
    tx.commit().await?;
    let mut tx = b.begin().await?;
    assert_eq!(tx.get(&t, &[int(1)]).await?, None);
    assert_eq!(
        tx.scan(&t, Bound::Unbounded, Bound::Unbounded, 0)
            .await?
            .len(),
        1
    );
    tx.rollback().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_first_committer_wins() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let a = cluster.engine(1)?;
    let b = cluster.engine(2)?;
    let t = accounts();
    let mut setup = a.begin().await?;
    setup
        .insert(&t, vec![int(1), text("ann"), int(100)])
        .await?;
    setup.commit().await?;

    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    let r1 = t1.get(&t, &[int(1)]).await?.expect("row");
    let r2 = t2.get(&t, &[int(1)]).await?.expect("row");
    t1.update(&t, &[int(1)], vec![int(1), text("ann"), int(110)])
        .await?;
    t2.update(&t, &[int(1)], vec![int(1), text("ann"), int(120)])
        .await?;
    assert_eq!(r1, r2);
    t1.commit().await?;
    assert!(matches!(
        t2.commit().await,
        Err(TxnError::SerializationFailure)
    ));
    let mut check = b.begin().await?;
    assert_eq!(
        check.get(&t, &[int(1)]).await?.map(|r| r[2].clone()),
        Some(int(110))
    );
    // A write to a row whose newest version is not in the snapshot fails at once.
    let mut stale = b.begin().await?;
    let mut fresh = a.begin().await?;
    fresh
        .update(&t, &[int(1)], vec![int(1), text("ann"), int(130)])
        .await?;
    fresh.commit().await?;
    assert!(matches!(
        stale
            .update(&t, &[int(1)], vec![int(1), text("ann"), int(140)])
            .await,
        Err(TxnError::SerializationFailure)
    ));
    stale.rollback().await?;
    check.rollback().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_index_concurrent_inserts_exactly_one_commits() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let a = cluster.engine(1)?;
    let b = cluster.engine(2)?;
    let u = users();
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    t1.insert(&u, vec![int(1), text("x@example.com")]).await?;
    t2.insert(&u, vec![int(2), text("x@example.com")]).await?;
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    assert!(
        r1.is_ok() != r2.is_ok(),
        "exactly one must commit: {r1:?} {r2:?}"
    );
    // A later insert of the same value sees it taken.
    let mut t3 = a.begin().await?;
    assert!(matches!(
        t3.insert(&u, vec![int(3), text("x@example.com")]).await,
        Err(TxnError::UniqueViolation { .. })
    ));
    // After deleting the owner, the value is free again.
    let owner = if r1.is_ok() { 1 } else { 2 };
    let mut t4 = b.begin().await?;
    assert!(t4.delete(&u, &[int(owner)]).await?);
    t4.commit().await?;
    let mut t5 = a.begin().await?;
    t5.insert(&u, vec![int(3), text("x@example.com")]).await?;
    t5.commit().await?;
    t3.rollback().await?;
    Ok(())
}

/// `insert_new` skips reading a key it was told is new (a generated row id); if the key
/// does exist after all, the commit fails instead of overwriting the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_new_never_overwrites_an_existing_row() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let a = cluster.engine(1)?;
    let t = accounts();
    let mut tx = a.begin().await?;
    tx.insert(&t, vec![int(1), text("ann"), int(100)]).await?;
    tx.commit().await?;

    let mut tx = a.begin().await?;
    tx.insert_new(&t, vec![int(1), text("imposter"), int(0)])
        .await?;
    assert!(
        matches!(tx.commit().await, Err(TxnError::SerializationFailure)),
        "the commit of a row over an existing key must fail"
    );
    let mut tx = a.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(1)]).await?,
        Some(vec![int(1), text("ann"), int(100)])
    );
    // A genuinely new key commits.
    tx.insert_new(&t, vec![int(2), text("bob"), int(5)]).await?;
    tx.commit().await?;
    let mut tx = a.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(2)]).await?,
        Some(vec![int(2), text("bob"), int(5)])
    );
    Ok(())
}
