//! [`StoreClient`]: routes operations to range primaries, batches them per node and retries
//! transient failures under the ambiguity rules that keep writes exactly-once or reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shmdb_placement::{PartitionMap, range_key};
use shmdb_proto::storage as pb;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::StoreClientConfig;
use crate::error::StoreError;
use crate::framed::metrics::FramedMetrics;
use crate::framed::{FramedConfig, tcp_transport};
use crate::grpc::GrpcConfig;
use crate::map_cache::MapCache;
use crate::op::{Answer, CondOutcome, Expect, Op, OpOutcome, Retry, Versioned};
use crate::transport::{Transport, TransportError};

/// The data path to the storage layer, shared by processing nodes, commit managers, tests and
/// benchmarks.
///
/// Cheap to clone (one `Arc`): clones share the cached partition map and the connections.
/// Every call routes each operation to the primary of its range using the cached map (whose
/// version travels with each request), and retries wrong-owner, unavailable and transport
/// failures after refreshing the map, with jittered exponential backoff, until the configured
/// deadline. See [`StoreError`] for what a failure promises about the data.
#[derive(Clone)]
pub struct StoreClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreClientConfig,
    transport: Arc<dyn Transport>,
    maps: MapCache,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("seeds", &self.inner.config.seeds)
            .field("map_version", &self.map_version())
            .finish()
    }
}

impl StoreClient {
    /// Connects over TCP (the data path `config.data_path` names: framed, or gRPC streams
    /// or unary calls): fetches the partition map from the seeds (retrying until the
    /// deadline while no node has a map yet). Fails with [`StoreError::NoMap`] if none came.
    pub async fn connect(config: StoreClientConfig) -> Result<StoreClient, StoreError> {
        let metrics = FramedMetrics::new().map_err(|e| {
            StoreError::Transport(TransportError::Rejected(format!(
                "framed transport metrics: {e}"
            )))
        })?;
        let transport = tcp_transport(
            config.data_path,
            GrpcConfig {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                data_path: config.data_path,
                ..GrpcConfig::default()
            },
            FramedConfig {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                ..FramedConfig::default()
            },
            metrics,
        );
        StoreClient::with_transport(config, transport).await
    }

    /// Like [`StoreClient::connect`] over any transport (RDMA later, a fake in tests).
    pub async fn with_transport(
        config: StoreClientConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<StoreClient, StoreError> {
        let client = StoreClient::with_map(config, transport, PartitionMap::default());
        let deadline = Instant::now() + client.inner.config.deadline;
        client.ensure_map(deadline).await?;
        Ok(client)
    }

    /// A client that starts from a known map without any network round trip (a component
    /// that already holds the map, or a test); it is refreshed like any other on failures.
    pub fn with_map(
        config: StoreClientConfig,
        transport: Arc<dyn Transport>,
        map: PartitionMap,
    ) -> StoreClient {
        let maps = MapCache::new(config.seeds.clone(), map);
        StoreClient {
            inner: Arc::new(Inner {
                config,
                transport,
                maps,
            }),
        }
    }

    /// The cached partition map (version 0 and empty when none is known).
    pub fn map(&self) -> Arc<PartitionMap> {
        self.inner.maps.get()
    }

    /// The version of the cached partition map, sent with every request.
    pub fn map_version(&self) -> u64 {
        self.inner.maps.get().version
    }

    /// Asks every seed and every known node for its map now and keeps the newest; for
    /// callers that learned out of band that the map changed. Fails with
    /// [`StoreError::NoMap`] only if there is still no usable map at all.
    pub async fn refresh_map(&self) -> Result<Arc<PartitionMap>, StoreError> {
        let map = self
            .inner
            .maps
            .refresh(
                self.inner.transport.as_ref(),
                self.inner.config.request_timeout,
                false,
                0,
            )
            .await;
        if map.version == 0 {
            return Err(StoreError::NoMap);
        }
        Ok(map)
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &StoreClientConfig {
        &self.inner.config
    }

    /// Reads a key: its value and stamp, or `None` when absent.
    pub async fn get(
        &self,
        table: u64,
        key: impl Into<Bytes>,
    ) -> Result<Option<Versioned>, StoreError> {
        self.one(Op::get(table, key)).await?.into_value()
    }

    /// Writes `value` if the key matches `expect`. A failed expectation is
    /// [`CondOutcome::Conflict`], not an error; [`StoreError::Ambiguous`] means an earlier
    /// attempt may have been applied and the caller must re-read.
    pub async fn put_if(
        &self,
        table: u64,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        expect: Expect,
    ) -> Result<CondOutcome, StoreError> {
        self.one(Op::put_if(table, key, value, expect))
            .await?
            .into_cond()
    }

    /// Deletes the key if it matches `expect`; outcomes as for [`StoreClient::put_if`].
    pub async fn delete_if(
        &self,
        table: u64,
        key: impl Into<Bytes>,
        expect: Expect,
    ) -> Result<CondOutcome, StoreError> {
        self.one(Op::delete_if(table, key, expect))
            .await?
            .into_cond()
    }

    /// Writes `value` unconditionally and returns its stamp (retried freely: the last
    /// attempt's value is what stays).
    pub async fn put(
        &self,
        table: u64,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, StoreError> {
        self.one(Op::put(table, key, value)).await?.into_written()
    }

    /// Deletes the key unconditionally and returns the stamp of the deletion.
    pub async fn delete(&self, table: u64, key: impl Into<Bytes>) -> Result<u64, StoreError> {
        self.one(Op::delete(table, key)).await?.into_written()
    }

    /// Adds `delta` to a counter and returns its new value and stamp. Never retried after a
    /// failure that may have been applied (that would count twice): such a failure is
    /// [`StoreError::Ambiguous`].
    pub async fn increment(
        &self,
        table: u64,
        key: impl Into<Bytes>,
        delta: i64,
    ) -> Result<(i64, u64), StoreError> {
        self.one(Op::increment(table, key, delta))
            .await?
            .into_counter()
    }

    /// Checks that the key matches `expect` without writing: [`CondOutcome::Checked`] when it
    /// does, [`CondOutcome::Conflict`] when it does not.
    pub async fn check(
        &self,
        table: u64,
        key: impl Into<Bytes>,
        expect: Expect,
    ) -> Result<CondOutcome, StoreError> {
        self.one(Op::check(table, key, expect)).await?.into_cond()
    }

    /// Runs independent operations with as few round trips as possible: one request per
    /// primary node, sent concurrently; only the operations that failed transiently are sent
    /// again. Outcomes come back in input order, each settled on its own. `Err` only when no
    /// partition map could be obtained (then nothing was sent).
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpOutcome>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.inner.config.deadline;
        self.ensure_map(deadline).await?;
        Ok(self.execute(ops, deadline).await)
    }

    async fn one(&self, op: Op) -> Result<OpOutcome, StoreError> {
        self.batch(vec![op])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Protocol("no outcome for the operation".into()))
    }

    /// Waits (with backoff, until `deadline`) for a usable map when none is cached.
    pub(crate) async fn ensure_map(&self, deadline: Instant) -> Result<(), StoreError> {
        let mut backoff = self.backoff();
        while self.map_version() == 0 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let map = self
                .inner
                .maps
                .refresh(
                    self.inner.transport.as_ref(),
                    self.inner.config.request_timeout.min(remaining),
                    true,
                    0,
                )
                .await;
            if map.version > 0 {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StoreError::NoMap);
            }
            tracing::debug!("no partition map yet, retrying");
            tokio::time::sleep(backoff.next_delay().min(remaining)).await;
        }
        Ok(())
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(
            self.inner.config.backoff_initial,
            self.inner.config.backoff_max,
        )
    }

    pub(crate) fn transport(&self) -> &dyn Transport {
        self.inner.transport.as_ref()
    }

    /// The address of the primary of the range holding `(table, key)` in `map`.
    pub(crate) fn route<'m>(map: &'m PartitionMap, table: u64, key: &[u8]) -> Option<&'m str> {
        let range = map.find(&range_key(table, key))?;
        map.nodes.get(&range.primary()?).map(String::as_str)
    }

    /// The time one attempt may take: the request timeout, cut short by the call deadline.
    pub(crate) fn attempt_budget(&self, deadline: Instant) -> Duration {
        self.inner
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
    }

    /// After a round with transient failures: refresh the map, and back off unless the
    /// refresh brought a newer map (then the retry can go out at once).
    ///
    /// `wanted` is the newest map version a node reported, or 0 when the failures give no
    /// such hint (then the cluster is always asked).
    pub(crate) async fn recover(
        &self,
        routed_with: u64,
        wanted: u64,
        deadline: Instant,
        backoff: &mut Backoff,
    ) {
        let map = self
            .inner
            .maps
            .refresh(
                self.inner.transport.as_ref(),
                self.attempt_budget(deadline),
                true,
                wanted,
            )
            .await;
        if map.version > routed_with {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(backoff.next_delay().min(remaining)).await;
    }

    /// The retry loop of a batch: route, send per node, settle, refresh, back off.
    async fn execute(&self, ops: Vec<Op>, deadline: Instant) -> Vec<OpOutcome> {
        let mut states: Vec<OpState> = ops.into_iter().map(OpState::new).collect();
        let mut pending: Vec<usize> = (0..states.len()).collect();
        let mut backoff = self.backoff();
        let mut round = 0u32;
        while !pending.is_empty() {
            if round > 0 && Instant::now() >= deadline {
                for &i in &pending {
                    states[i].give_up();
                }
                break;
            }
            round += 1;
            let map = self.map();
            let mut retries: Vec<(usize, Retry)> = Vec::new();
            let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
            for &i in &pending {
                let op = &states[i].op;
                match Self::route(&map, op.table(), op.key()) {
                    Some(addr) => groups.entry(addr).or_default().push(i),
                    None => retries.push((i, Retry::NoRoute)),
                }
            }
            let budget = self.attempt_budget(deadline);
            let requests = groups.into_iter().flat_map(|(addr, idxs)| {
                split_request(&states, idxs).map(move |part| (addr, part))
            });
            let sends = requests.map(|(addr, idxs)| {
                let req = pb::BatchRequest {
                    map_version: map.version,
                    ops: idxs.iter().map(|&i| states[i].proto.clone()).collect(),
                };
                async move {
                    let answer =
                        match tokio::time::timeout(budget, self.transport().batch(addr, req)).await
                        {
                            Ok(answer) => answer,
                            Err(_) => Err(TransportError::Timeout(format!(
                                "{addr}: no answer within {budget:?}"
                            ))),
                        };
                    (addr, idxs, answer)
                }
            });
            for (addr, idxs, answer) in futures::future::join_all(sends).await {
                match answer {
                    Ok(resp) if resp.results.len() == idxs.len() => {
                        for (i, result) in idxs.into_iter().zip(resp.results) {
                            match states[i].op.interpret(result) {
                                Answer::Done(outcome) => states[i].settle(outcome),
                                Answer::Retry(retry) => retries.push((i, retry)),
                            }
                        }
                    }
                    Ok(resp) => {
                        let err = StoreError::Protocol(format!(
                            "{addr} answered {} results for {} operations",
                            resp.results.len(),
                            idxs.len()
                        ));
                        for i in idxs {
                            states[i].settle(OpOutcome::Failed(err.clone()));
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        retries.extend(idxs.into_iter().map(|i| (i, Retry::Transport(e.clone()))));
                    }
                    Err(e) => {
                        for i in idxs {
                            states[i].settle(OpOutcome::Failed(StoreError::Transport(e.clone())));
                        }
                    }
                }
            }
            pending.clear();
            let all_wrong_owner = retries
                .iter()
                .all(|(_, r)| matches!(r, Retry::WrongOwner { .. }));
            let wanted = if all_wrong_owner {
                retries
                    .iter()
                    .map(|(_, r)| r.node_version())
                    .max()
                    .unwrap_or(0)
            } else {
                0
            };
            for (i, retry) in retries {
                if states[i].note_retry(retry) {
                    pending.push(i);
                }
            }
            if pending.is_empty() {
                break;
            }
            tracing::debug!(
                round,
                pending = pending.len(),
                map_version = map.version,
                last_error = %states[pending[0]].last_error,
                "retrying operations after transient failures"
            );
            self.recover(map.version, wanted, deadline, &mut backoff)
                .await;
        }
        states
            .into_iter()
            .map(|s| {
                s.outcome.unwrap_or_else(|| {
                    OpOutcome::Failed(StoreError::Protocol("operation left unsettled".into()))
                })
            })
            .collect()
    }
}

/// One operation's progress through the retry loop.
/// Most operations in one request to a node.
const MAX_OPS_PER_REQUEST: usize = 1024;
/// Most key and value bytes in one request to a node.
const MAX_BYTES_PER_REQUEST: usize = 1 << 20;

/// Cuts one node's share of a batch into requests of bounded size: a bulk commit (a COPY of
/// 100,000 rows) must not become one message larger than a node accepts, nor one request
/// whose replication outlasts the request timeout. The parts go out concurrently, so the
/// node still pipelines them.
fn split_request(states: &[OpState], idxs: Vec<usize>) -> impl Iterator<Item = Vec<usize>> {
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for i in idxs {
        let size = states[i].op.key().len() + states[i].op.value_len() + 16;
        let full = parts.last().is_some_and(|p| {
            !p.is_empty()
                && (p.len() >= MAX_OPS_PER_REQUEST || bytes + size > MAX_BYTES_PER_REQUEST)
        });
        if full {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(part) = parts.last_mut() {
            part.push(i);
        }
    }
    parts.into_iter().filter(|p| !p.is_empty())
}

struct OpState {
    op: Op,
    proto: pb::Op,
    /// The first failure after which the write may have been applied; from then on the
    /// operation can only end in success or `Ambiguous`.
    doubt: Option<String>,
    last_error: String,
    last_was_no_route: bool,
    outcome: Option<OpOutcome>,
}

impl OpState {
    fn new(op: Op) -> Self {
        let proto = op.to_proto();
        OpState {
            op,
            proto,
            doubt: None,
            last_error: String::new(),
            last_was_no_route: false,
            outcome: None,
        }
    }

    /// Records the node's final answer, turning it into `Ambiguous` where an earlier attempt
    /// may have been applied: a conflict then may be our own write, and any other failure
    /// says nothing about that earlier attempt.
    fn settle(&mut self, outcome: OpOutcome) {
        let outcome = match (outcome, &self.doubt, self.op.is_write()) {
            (OpOutcome::Cond(CondOutcome::Conflict { current }), Some(doubt), true) => {
                OpOutcome::Failed(StoreError::Ambiguous {
                    reason: format!(
                        "{doubt}; the retry then conflicted (current stamp {current:?}), \
                         possibly with the earlier attempt"
                    ),
                })
            }
            (OpOutcome::Failed(e), Some(doubt), true) => OpOutcome::Failed(StoreError::Ambiguous {
                reason: format!("{doubt}; the retry then failed: {e}"),
            }),
            (OpOutcome::Failed(StoreError::Protocol(e)), None, true) => {
                OpOutcome::Failed(StoreError::Ambiguous {
                    reason: format!("unexpected answer to a write: {e}"),
                })
            }
            (outcome, _, _) => outcome,
        };
        self.outcome = Some(outcome);
    }

    /// Records a transient failure; returns whether the operation may be sent again.
    fn note_retry(&mut self, retry: Retry) -> bool {
        self.last_error = retry.to_string();
        self.last_was_no_route = matches!(retry, Retry::NoRoute);
        if self.op.is_write() && retry.may_have_been_applied() {
            if matches!(self.op, Op::Increment { .. }) {
                // Adding twice is not the same as adding once: never resend.
                self.outcome = Some(OpOutcome::Failed(StoreError::Ambiguous {
                    reason: format!("increment may have been applied: {retry}"),
                }));
                return false;
            }
            if self.doubt.is_none() {
                self.doubt = Some(format!("an attempt may have been applied ({retry})"));
            }
        }
        true
    }

    /// Ends the operation at the deadline.
    fn give_up(&mut self) {
        let err = match &self.doubt {
            Some(doubt) if self.op.is_write() => StoreError::Ambiguous {
                reason: format!(
                    "{doubt}; deadline exceeded, last error: {}",
                    self.last_error
                ),
            },
            _ if self.last_was_no_route => StoreError::NoMap,
            _ => StoreError::DeadlineExceeded {
                last_error: self.last_error.clone(),
            },
        };
        self.outcome = Some(OpOutcome::Failed(err));
    }
}
