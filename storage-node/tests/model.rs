//! Model-based property test: random operation sequences against a replicated storage node
//! agree with a `BTreeMap` model, scans included, and the backup ends identical.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

#[derive(Debug, Clone)]
enum ExpectChoice {
    Current,
    Absent,
    Stale,
    Random(u64),
}

#[derive(Debug, Clone)]
enum Step {
    Get(u8),
    PutIf(u8, Vec<u8>, ExpectChoice),
    DeleteIf(u8, ExpectChoice),
    Put(u8, Vec<u8>),
    Delete(u8),
    Increment(u8, i32),
    Check(u8, ExpectChoice),
    Scan(u8, u8, u32),
}

fn expect_choice() -> impl Strategy<Value = ExpectChoice> {
    prop_oneof![
        3 => Just(ExpectChoice::Current),
        2 => Just(ExpectChoice::Absent),
        1 => Just(ExpectChoice::Stale),
        1 => any::<u64>().prop_map(ExpectChoice::Random),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0u8..12;
    let value = proptest::collection::vec(any::<u8>(), 0..16);
    prop_oneof![
        key.clone().prop_map(Step::Get),
        (key.clone(), value.clone(), expect_choice()).prop_map(|(k, v, e)| Step::PutIf(k, v, e)),
        (key.clone(), expect_choice()).prop_map(|(k, e)| Step::DeleteIf(k, e)),
        (key.clone(), value).prop_map(|(k, v)| Step::Put(k, v)),
        key.clone().prop_map(Step::Delete),
        (key.clone(), -5i32..5).prop_map(|(k, d)| Step::Increment(k, d)),
        (key.clone(), expect_choice()).prop_map(|(k, e)| Step::Check(k, e)),
        (key.clone(), key, 0u32..6).prop_map(|(a, b, l)| Step::Scan(a, b, l)),
    ]
}

struct Harness {
    rt: tokio::runtime::Runtime,
    nodes: Vec<shmdb_storage_node::RunningNode>,
    client: pb::storage_client::StorageClient<tonic::transport::Channel>,
    version: u64,
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (nodes, client, version) = rt.block_on(async {
            let nodes = start_nodes(2, |_| {}).await;
            let map = bootstrap_map(&nodes, 2, 1);
            install(&nodes, &map).await;
            let client = storage(&nodes[0].addr.to_string()).await;
            (nodes, client, map.version)
        });
        Harness {
            rt,
            nodes,
            client,
            version,
        }
    })
}

fn key(case: u64, k: u8) -> Vec<u8> {
    let mut out = case.to_be_bytes().to_vec();
    if k.is_multiple_of(3) {
        out.push(k); // some keys are prefixes of others
    } else {
        out.extend_from_slice(&[k, k]);
    }
    out
}

fn expect_of(choice: &ExpectChoice, current: Option<u64>, stale: Option<u64>) -> pb::Expect {
    let kind = match choice {
        ExpectChoice::Current => match current {
            Some(s) => pb::expect::Kind::Stamp(s),
            None => pb::expect::Kind::Absent(true),
        },
        ExpectChoice::Absent => pb::expect::Kind::Absent(true),
        ExpectChoice::Stale => pb::expect::Kind::Stamp(stale.unwrap_or(1)),
        ExpectChoice::Random(s) => pb::expect::Kind::Stamp(*s),
    };
    pb::Expect { kind: Some(kind) }
}

fn matches(model: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>, k: &[u8], e: &pb::Expect) -> bool {
    match (model.get(k), e.kind) {
        (None, Some(pb::expect::Kind::Absent(_))) => true,
        (Some((_, s)), Some(pb::expect::Kind::Stamp(x))) => *s == x,
        _ => false,
    }
}

static CASE: AtomicU64 = AtomicU64::new(1);

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn storage_agrees_with_a_btreemap(steps in proptest::collection::vec(step(), 1..60)) {
        let h = harness();
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let mut client = h.client.clone();
        let v = h.version;
        h.rt.block_on(async {
            let mut model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
            let mut last_stamp = 0u64;
            let mut stale: Option<u64> = None;
            for step in steps {
                match step {
                    Step::Get(k) => {
                        let k = key(case, k);
                        let got = run(&mut client, v, get(&k)).await;
                        match (model.get(&k), got) {
                            (None, R::Absent(_)) => {}
                            (Some((val, s)), R::Found(f)) => {
                                prop_assert_eq!(&f.value[..], &val[..]);
                                prop_assert_eq!(f.stamp, *s);
                            }
                            (m, g) => prop_assert!(false, "get {:?}: model {:?} store {:?}", k, m, g),
                        }
                    }
                    Step::PutIf(k, val, choice) => {
                        let k = key(case, k);
                        let e = expect_of(&choice, model.get(&k).map(|m| m.1), stale);
                        let ok = matches(&model, &k, &e);
                        let got = run(&mut client, v, put_if(&k, &val, Some(e))).await;
                        match got {
                            R::Written(w) if ok => {
                                prop_assert!(w.stamp > last_stamp);
                                last_stamp = w.stamp;
                                if let Some((_, s)) = model.insert(k, (val, w.stamp)) { stale = Some(s); }
                            }
                            R::Conflict(c) if !ok => {
                                prop_assert_eq!(c.stamp, model.get(&k).map_or(0, |m| m.1));
                            }
                            other => prop_assert!(false, "put_if ok={} got {:?}", ok, other),
                        }
                    }
                    Step::DeleteIf(k, choice) => {
                        let k = key(case, k);
                        let e = expect_of(&choice, model.get(&k).map(|m| m.1), stale);
                        let ok = matches(&model, &k, &e);
                        let got = run(&mut client, v, op(pb::op::Op::DeleteIf(pb::DeleteIfOp {
                            table: TABLE, key: Bytes::from(k.clone()), expect: Some(e),
                        }))).await;
                        match got {
                            R::Written(_) if ok => {
                                if let Some((_, s)) = model.remove(&k) { stale = Some(s); }
                            }
                            R::Conflict(_) if !ok => {}
                            other => prop_assert!(false, "delete_if ok={} got {:?}", ok, other),
                        }
                    }
                    Step::Put(k, val) => {
                        let k = key(case, k);
                        let R::Written(w) = run(&mut client, v, put(&k, &val)).await else {
                            prop_assert!(false, "put failed"); unreachable!()
                        };
                        prop_assert!(w.stamp > last_stamp);
                        last_stamp = w.stamp;
                        if let Some((_, s)) = model.insert(k, (val, w.stamp)) { stale = Some(s); }
                    }
                    Step::Delete(k) => {
                        let k = key(case, k);
                        let got = run(&mut client, v, op(pb::op::Op::Delete(pb::DeleteOp {
                            table: TABLE, key: Bytes::from(k.clone()),
                        }))).await;
                        prop_assert!(matches!(got, R::Written(_)), "delete got {:?}", got);
                        if let Some((_, s)) = model.remove(&k) { stale = Some(s); }
                    }
                    Step::Increment(k, d) => {
                        let k = key(case, k);
                        let got = run(&mut client, v, op(pb::op::Op::Increment(pb::IncrementOp {
                            table: TABLE, key: Bytes::from(k.clone()), delta: d.into(),
                        }))).await;
                        match model.get(&k) {
                            Some((val, _)) if val.len() != 8 => {
                                prop_assert!(matches!(got, R::Error(ref e) if e.code == pb::ErrorCode::NotACounter as i32), "got {:?}", got);
                            }
                            current => {
                                let old = current.map_or(0, |(val, _)| {
                                    i64::from_le_bytes(val[..].try_into().unwrap_or([0; 8]))
                                });
                                let R::Counter(c) = got else {
                                    prop_assert!(false, "increment got {:?}", got); unreachable!()
                                };
                                prop_assert_eq!(c.value, old + i64::from(d));
                                last_stamp = c.stamp;
                                if let Some((_, s)) = model.insert(k, (c.value.to_le_bytes().to_vec(), c.stamp)) { stale = Some(s); }
                            }
                        }
                    }
                    Step::Check(k, choice) => {
                        let k = key(case, k);
                        let e = expect_of(&choice, model.get(&k).map(|m| m.1), stale);
                        let ok = matches(&model, &k, &e);
                        let got = run(&mut client, v, op(pb::op::Op::Check(pb::CheckOp {
                            table: TABLE, key: Bytes::from(k.clone()), expect: Some(e),
                        }))).await;
                        prop_assert_eq!(matches!(got, R::Checked(_)), ok, "check got {:?}", got);
                    }
                    Step::Scan(a, b, limit) => {
                        let (from, to) = (key(case, a.min(b)), key(case, a.max(b)));
                        let resp = client.scan(pb::ScanRequest {
                            map_version: v, table: TABLE, start: Bytes::from(from.clone()),
                            end: Bytes::from(to.clone()), to_table_end: false, limit, filter: None,
                        }).await.map_err(|e| TestCaseError::fail(e.to_string()))?.into_inner();
                        prop_assert!(resp.error.is_none(), "scan error {:?}", resp.error);
                        let effective = if limit == 0 { usize::MAX } else { limit as usize };
                        let want: Vec<_> = model.range(from.clone()..to.clone()).take(effective).collect();
                        let got: Vec<_> = resp.items.iter().map(|i| (i.key.to_vec(), i.value.to_vec(), i.stamp)).collect();
                        prop_assert_eq!(got.len(), want.len());
                        for ((gk, gv, gs), (wk, (wv, ws))) in got.iter().zip(&want) {
                            prop_assert_eq!(gk, *wk);
                            prop_assert_eq!(gv, wv);
                            prop_assert_eq!(gs, ws);
                        }
                        let more = model.range(from..to).count() > want.len();
                        prop_assert_eq!(resp.resume_key.is_some(), more);
                    }
                }
            }
            // Everything acknowledged is on the backup too.
            let prefix = case.to_be_bytes();
            let on = |n: usize| -> Vec<_> {
                h.nodes[n].node.local_items(TABLE).into_iter()
                    .filter(|(k, _, _)| k.starts_with(&prefix)).collect()
            };
            let primary = on(0);
            prop_assert_eq!(&primary, &on(1));
            let flat: Vec<_> = model.into_iter().map(|(k, (v, s))| (k, Bytes::from(v), s)).collect();
            prop_assert_eq!(primary, flat);
            Ok(())
        })?;
    }
}
