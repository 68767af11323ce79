//! The reconciler: `SharedMemDatabase` in, Kubernetes objects and status out.
//!
//! `reconcile` runs inside kube's `finalizer` helper: an `Apply` validates the spec, builds
//! every object (`resources::desired`), applies each with server-side apply under one field
//! manager, hands the storage target to the placement task and writes the status through
//! the status subresource; a `Cleanup` stops the placement task before the finalizer is
//! removed (owned objects are then garbage-collected through their owner references).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{Instrument, debug, field, info, info_span, warn};

use crate::autoscale::{self, StorageObservation};
use crate::conditions;
use crate::crd::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, SharedMemDatabase,
    SharedMemDatabaseStatus,
};
use crate::error::{Error, Result, is_not_found};
use crate::metrics::Metrics;
use crate::placement::{PlacementSupervisor, StorageTarget};
use crate::resources::{self, ClusterApis, Inputs, Names};
use crate::selector::DatabaseSelector;
use crate::status;
use crate::validate;

/// The one field manager of every server-side apply, so ownership of fields is stable
/// across operator restarts and upgrades.
pub const FIELD_MANAGER: &str = "shmdb-operator";
/// The finalizer that lets the operator stop placement before the database goes.
pub const FINALIZER: &str = "shmdb.io/cleanup";
/// How long discovery answers (Prometheus Operator, custom metrics) are trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Who publishes Events.
    pub reporter: Reporter,
    /// Placement tasks; `None` runs the reconciler alone (tests, or placement disabled).
    pub placement: Option<Arc<PlacementSupervisor>>,
    /// The databases this operator manages (every one by default).
    pub selector: DatabaseSelector,
    apis: Mutex<Option<(Instant, ClusterApis)>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context over `client`.
    pub fn new(
        client: Client,
        metrics: Metrics,
        reporter: Reporter,
        placement: Option<Arc<PlacementSupervisor>>,
    ) -> Self {
        Context {
            client,
            metrics,
            reporter,
            placement,
            selector: DatabaseSelector::default(),
            apis: Mutex::new(None),
        }
    }

    /// Limits the operator to the databases `selector` matches, so several operator
    /// installations can share a cluster without two managing one database.
    pub fn with_selector(mut self, selector: DatabaseSelector) -> Self {
        self.selector = selector;
        self
    }

    /// Which optional APIs the cluster serves, by discovery (cached for a few minutes).
    async fn cluster_apis(&self) -> Result<ClusterApis> {
        if let Some((at, apis)) = *self.apis.lock()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(apis);
        }
        let mut apis = ClusterApis::default();
        match self
            .client
            .list_api_group_resources(&format!("{}/v1", resources::MONITORING_GROUP))
            .await
        {
            Ok(list) => {
                apis.service_monitor = list.resources.iter().any(|r| r.kind == "ServiceMonitor");
                apis.pod_monitor = list.resources.iter().any(|r| r.kind == "PodMonitor");
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        match self
            .client
            .list_api_group_resources("custom.metrics.k8s.io/v1beta2")
            .await
        {
            Ok(_) => apis.custom_metrics = true,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        *self.apis.lock() = Some((Instant::now(), apis));
        Ok(apis)
    }

    async fn publish(&self, db: &SharedMemDatabase, event: Event) -> Result<()> {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        recorder.publish(&event, &db.object_ref(&())).await?;
        Ok(())
    }
}

/// Reconciles one database (the controller's entry point).
pub async fn reconcile(db: Arc<SharedMemDatabase>, ctx: Arc<Context>) -> Result<Action> {
    // The watch only delivers matching databases, but one relabelled since belongs to
    // another operator now: touching it (even its finalizer) would make two managers.
    if !ctx.selector.matches(db.labels()) {
        debug!(database = %db.name(), selector = %ctx.selector, "not this operator's database");
        return Ok(Action::await_change());
    }
    let span = info_span!(
        "reconcile",
        database = %db.name(),
        namespace = %db.namespace_or_default(),
        outcome = field::Empty
    );
    let started = Instant::now();
    let api: Api<SharedMemDatabase> =
        Api::namespaced(ctx.client.clone(), &db.namespace_or_default());
    let result = finalizer(&api, FINALIZER, db, |event| async {
        match event {
            Finalizer::Apply(db) => apply(&db, &ctx).await,
            Finalizer::Cleanup(db) => cleanup(&db, &ctx).await,
        }
    })
    .instrument(span.clone())
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    span.record("outcome", outcome);
    ctx.metrics
        .observe(outcome, started.elapsed(), result.as_ref().err());
    result
}

/// Retries a failed reconcile after a pause (kube backs off on repeated failures too).
pub fn error_policy(db: Arc<SharedMemDatabase>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(database = %db.name(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Server-side apply of a typed namespaced object under [`FIELD_MANAGER`].
async fn apply_object<K>(client: &Client, namespace: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(obj)).await?)
}

async fn write_status(
    ctx: &Context,
    db: &SharedMemDatabase,
    status: &SharedMemDatabaseStatus,
) -> Result<()> {
    let api: Api<SharedMemDatabase> =
        Api::namespaced(ctx.client.clone(), &db.namespace_or_default());
    let patch = json!({
        "apiVersion": "shmdb.io/v1alpha1",
        "kind": "SharedMemDatabase",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&db.name(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// A spec that cannot be realized: Degraded condition and a Warning Event naming the
/// fields; nothing is applied or deleted, and nothing is retried until the spec changes.
async fn reject(
    db: &SharedMemDatabase,
    ctx: &Context,
    problems: &[validate::SpecProblem],
) -> Result<Action> {
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    warn!(database = %db.name(), %message, "invalid spec");
    ctx.publish(
        db,
        Event {
            type_: EventType::Warning,
            reason: "InvalidSpec".to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: "Validate".to_string(),
            secondary: None,
        },
    )
    .await?;
    let mut status = db.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = db.metadata.generation;
    conditions::set(
        &mut status.conditions,
        CONDITION_DEGRADED,
        true,
        "InvalidSpec",
        message,
        generation,
        now,
    );
    conditions::set(
        &mut status.conditions,
        CONDITION_READY,
        false,
        "InvalidSpec",
        "the spec is invalid; see the Degraded condition",
        generation,
        now,
    );
    write_status(ctx, db, &status).await?;
    ctx.metrics.observe("invalid_spec", Duration::ZERO, None);
    Ok(Action::await_change())
}

async fn apply(db: &SharedMemDatabase, ctx: &Context) -> Result<Action> {
    let problems = validate::problems(db);
    if !problems.is_empty() {
        return reject(db, ctx, &problems).await;
    }
    let names = Names::of(db);
    let ns = names.namespace.clone();
    let apis = ctx.cluster_apis().await?;
    let previous = db.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    // Storage size: the autoscaler decides, the placement task drains before a shrink.
    let placement_seen = ctx.placement.as_ref().map(|p| p.snapshot(db));
    let snapshot = placement_seen.clone().unwrap_or_default();
    let observation = StorageObservation {
        memory: snapshot.memory,
        removable: snapshot.removable.clone(),
    };
    let decision = autoscale::decide(db, previous.storage.as_ref(), &observation, now);
    if let Some(placement) = &ctx.placement {
        placement.set_target(
            db,
            StorageTarget {
                stateful_set_replicas: decision.stateful_set_replicas,
                draining: decision.draining.clone(),
            },
        );
    }
    // Every replica reconciles, but only the one holding this database's placement Lease
    // applies objects and writes status: a follower has no partition-map view (its status
    // would say "not Ready" while the leader's says Ready) and no drain progress (it would
    // re-grow a StatefulSet the leader is shrinking). Its placement task above competes for
    // the Lease; look again soon in case it wins.
    if placement_seen.as_ref().is_some_and(|seen| !seen.leader) {
        debug!(database = %names.database, "not the placement leader; leaving objects and status to it");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    ctx.metrics
        .storage_target
        .with_label_values(&[&format!("{ns}/{}", names.database)])
        .set(i64::from(decision.target));

    let desired = resources::desired(
        db,
        &Inputs {
            storage_replicas: decision.stateful_set_replicas,
            apis,
        },
    );
    for service in &desired.services {
        apply_object(&ctx.client, &ns, service).await?;
    }
    let mut sets = Vec::new();
    for set in &desired.stateful_sets {
        sets.push(apply_object(&ctx.client, &ns, set).await?);
    }
    for pdb in &desired.pdbs {
        apply_object::<PodDisruptionBudget>(&ctx.client, &ns, pdb).await?;
    }
    for hpa in &desired.hpas {
        apply_object::<HorizontalPodAutoscaler>(&ctx.client, &ns, hpa).await?;
    }
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    for name in &desired.unwanted_hpas {
        match hpa_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(hpa = %name, "autoscaling switched off; HPA deleted"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for monitor in &desired.monitors {
        let resource = if monitor
            .types
            .as_ref()
            .is_some_and(|t| t.kind == "PodMonitor")
        {
            resources::pod_monitor_resource()
        } else {
            resources::service_monitor_resource()
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&monitor.name_any(), &params, &Patch::Apply(monitor))
            .await?;
    }
    if let Some((reason, note)) = &decision.scaled {
        info!(database = %names.database, %note, "storage scaling");
        ctx.publish(
            db,
            Event {
                type_: EventType::Normal,
                reason: (*reason).to_string(),
                note: Some(note.clone()),
                action: "ScaleStorage".to_string(),
                secondary: None,
            },
        )
        .await?;
    }

    if snapshot.lost > 0 {
        ctx.publish(
            db,
            Event {
                type_: EventType::Warning,
                reason: "RangesLost".to_string(),
                note: Some(format!(
                    "{} ranges have no live replica; their data returns only if their storage nodes do",
                    snapshot.lost
                )),
                action: "Placement".to_string(),
                secondary: None,
            },
        )
        .await?;
    }

    let status = status::build(
        db,
        &names,
        &previous,
        &sets,
        &decision,
        placement_seen.as_ref(),
        now,
    );
    let progressing =
        conditions::status_of(&status.conditions, CONDITION_PROGRESSING) == Some("True");
    write_status(ctx, db, &status).await?;
    debug!(database = %names.database, "reconciled");
    Ok(Action::requeue(Duration::from_secs(if progressing {
        5
    } else {
        30
    })))
}

async fn cleanup(db: &SharedMemDatabase, ctx: &Context) -> Result<Action> {
    info!(database = %db.name(), "database deleted; stopping placement");
    if let Some(placement) = &ctx.placement {
        placement.forget(db).await;
    }
    ctx.publish(
        db,
        Event {
            type_: EventType::Normal,
            reason: "Deleting".to_string(),
            note: Some("placement stopped; owned objects are garbage-collected".to_string()),
            action: "Cleanup".to_string(),
            secondary: None,
        },
    )
    .await?;
    Ok(Action::await_change())
}

/// Runs the controller until SIGTERM / Ctrl-C: watches databases and the objects they own.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let databases: Api<SharedMemDatabase> = Api::all(client.clone());
    if let Err(e) = databases
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        warn!(error = %e, "cannot list SharedMemDatabases; is the CRD installed? (crds/shmdbs.yaml)");
    }
    if !ctx.selector.selects_all() {
        info!(selector = %ctx.selector, "managing only the databases this label selector matches");
    }
    let config = watcher::Config::default();
    let controller = Controller::new(databases, ctx.selector.watcher_config());
    let pruning = ctx
        .placement
        .clone()
        .map(|placement| tokio::spawn(prune_placement(placement, controller.store())));
    controller
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            config.clone(),
        )
        .owns(Api::<PodDisruptionBudget>::all(client), config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    if let Some(pruning) = pruning {
        pruning.abort();
    }
}

/// How often placement tasks are checked against the databases this operator still manages.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// Stops the placement of databases that left this operator's watch without being deleted
/// (relabelled out of its selector): no reconcile runs for them any more, so nothing else
/// would, and their Lease would stay held against the operator that now owns them.
async fn prune_placement(placement: Arc<PlacementSupervisor>, store: Store<SharedMemDatabase>) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let stopped = placement
            .retain(|namespace, name| store.get(&ObjectRef::new(name).within(namespace)).is_some())
            .await;
        if stopped > 0 {
            info!(
                stopped,
                "stopped the placement of databases this operator no longer manages"
            );
        }
    }
}
