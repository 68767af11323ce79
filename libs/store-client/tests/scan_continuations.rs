//! Scans that follow the nodes' continuations across ranges and pages.

mod common;

use common::{Call, FakeCluster, addr, config, two_ranges};
use shmdb_store_client::{KeyRange, StoreClient, StoreError};

fn alphabet(cluster: &FakeCluster) {
    for c in b'a'..=b'z' {
        cluster.insert(1, &[c], &[c.to_ascii_uppercase()]);
    }
    // Neighbouring tables must never leak into a scan of table 1.
    cluster.insert(0, b"x", b"other table");
    cluster.insert(2, b"a", b"other table");
}

fn keys(items: &[shmdb_store_client::Item]) -> String {
    items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.key).into_owned())
        .collect()
}

#[tokio::test]
async fn a_scan_continues_across_two_ranges_on_two_nodes() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    alphabet(&cluster);
    let client = cluster.client_with_map(&map);

    let items = client.scan(1, KeyRange::all(), 100).await.expect("scan");
    assert_eq!(keys(&items), "abcdefghijklmnopqrstuvwxyz");
    assert_eq!(items[0].value, "A");
    assert_eq!(
        cluster.data_calls(),
        vec![
            Call::Scan {
                addr: addr(1),
                start: Vec::new()
            },
            Call::Scan {
                addr: addr(2),
                start: b"m".to_vec()
            },
        ]
    );
}

#[tokio::test]
async fn a_scan_stops_at_its_limit_and_its_end() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    alphabet(&cluster);
    let mut cfg = config();
    cfg.scan_page_limit = 4;
    let client = StoreClient::with_map(cfg, cluster.clone(), map);

    let items = client.scan(1, KeyRange::all(), 15).await.expect("scan");
    assert_eq!(keys(&items), "abcdefghijklmno");
    let items = client
        .scan(1, KeyRange::between("k", "q"), 100)
        .await
        .expect("scan");
    assert_eq!(keys(&items), "klmnop");
    let items = client
        .scan(1, KeyRange::from_start("x"), 100)
        .await
        .expect("scan");
    assert_eq!(keys(&items), "xyz");

    let page = client
        .scan_page(1, &KeyRange::all(), 3)
        .await
        .expect("page");
    assert_eq!(keys(&page.items), "abc");
    assert!(page.resume.is_some());
}

#[tokio::test]
async fn an_inverted_range_is_rejected_before_anything_is_sent() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let client = cluster.client_with_map(&map);
    let err = client.scan(1, KeyRange::between("z", "a"), 10).await;
    assert!(
        matches!(err, Err(StoreError::InvalidArgument(_))),
        "{err:?}"
    );
    assert!(cluster.take_log().is_empty());
    assert_eq!(
        client.scan(1, KeyRange::between("a", "a"), 10).await,
        Ok(Vec::new())
    );
}

#[tokio::test]
async fn a_scan_sent_to_a_former_owner_follows_the_new_map() {
    let old = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&old);
    alphabet(&cluster);
    // The upper range moved to node 1.
    cluster.set_map(&common::map(
        2,
        2,
        &[(Vec::new(), 1), (shmdb_placement::range_key(1, b"m"), 1)],
    ));
    let client = cluster.client_with_map(&old);
    let items = client
        .scan(1, KeyRange::from_start("k"), 100)
        .await
        .expect("scan");
    assert_eq!(keys(&items), "klmnopqrstuvwxyz");
    assert_eq!(client.map_version(), 2);
}
