//! The reconciler against a scripted mock API server, scenario by scenario: every request's
//! method, path and body is asserted, and a request the scenario does not expect makes the
//! reconcile hang and the test fail.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mock_api::{self, Handle, expect};
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use shmdb_operator::controller::{Context, FINALIZER, reconcile};
use shmdb_operator::crd::SharedMemDatabase;
use shmdb_operator::fixtures::example_database;
use shmdb_operator::metrics::Metrics;
use shmdb_operator::selector::DatabaseSelector;

const NS: &str = "shop";
const DB: &str = "orders";

fn context(client: kube::Client) -> Arc<Context> {
    let reporter = Reporter {
        controller: "shmdb-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(Context::new(
        client,
        Metrics::new().expect("metrics"),
        reporter,
        None,
    ))
}

/// The example database as the API returns it after the finalizer was added.
fn finalized() -> SharedMemDatabase {
    let mut db = example_database(DB, NS);
    db.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    db
}

fn assert_owned(body: &Value) {
    let refs = body["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("no owner references: {body}"));
    assert_eq!(refs.len(), 1, "{body}");
    assert_eq!(refs[0]["kind"], "SharedMemDatabase");
    assert_eq!(refs[0]["apiVersion"], "shmdb.io/v1alpha1");
    assert_eq!(refs[0]["name"], DB);
    assert_eq!(refs[0]["uid"], format!("uid-{DB}"));
    assert_eq!(refs[0]["controller"], true);
}

fn assert_applied(query: &str) {
    assert!(
        query.contains("fieldManager=shmdb-operator") && query.contains("force=true"),
        "not a forced server-side apply by shmdb-operator: {query}"
    );
}

/// Which objects the first reconcile applies, in order: (path, kind).
fn object_paths() -> Vec<(String, &'static str)> {
    let core = format!("/api/v1/namespaces/{NS}");
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let policy = format!("/apis/policy/v1/namespaces/{NS}");
    let hpa = format!("/apis/autoscaling/v2/namespaces/{NS}");
    vec![
        (format!("{core}/services/{DB}-storage-headless"), "Service"),
        (format!("{core}/services/{DB}-commit-headless"), "Service"),
        (
            format!("{core}/services/{DB}-processing-headless"),
            "Service",
        ),
        (format!("{core}/services/{DB}"), "Service"),
        (format!("{apps}/statefulsets/{DB}-storage"), "StatefulSet"),
        (format!("{apps}/statefulsets/{DB}-commit"), "StatefulSet"),
        (
            format!("{apps}/statefulsets/{DB}-processing"),
            "StatefulSet",
        ),
        (
            format!("{policy}/poddisruptionbudgets/{DB}-storage"),
            "PodDisruptionBudget",
        ),
        (
            format!("{policy}/poddisruptionbudgets/{DB}-commit"),
            "PodDisruptionBudget",
        ),
        (
            format!("{policy}/poddisruptionbudgets/{DB}-processing"),
            "PodDisruptionBudget",
        ),
        (
            format!("{hpa}/horizontalpodautoscalers/{DB}-processing"),
            "HorizontalPodAutoscaler",
        ),
        (
            format!("{hpa}/horizontalpodautoscalers/{DB}-commit"),
            "HorizontalPodAutoscaler",
        ),
    ]
}

/// Serves discovery with no Prometheus Operator and no custom metrics.
async fn discovery_without_extras(handle: &mut Handle) {
    expect(handle, Method::GET, "/apis/monitoring.coreos.com/v1")
        .await
        .not_found();
    expect(handle, Method::GET, "/apis/custom.metrics.k8s.io/v1beta2")
        .await
        .not_found();
}

/// Serves every apply of a full reconcile, returning the bodies by path.
async fn serve_applies(handle: &mut Handle) -> Vec<(String, Value)> {
    let mut bodies = Vec::new();
    for (path, kind) in object_paths() {
        let request = expect(handle, Method::PATCH, &path).await;
        assert_applied(&request.query);
        assert_eq!(request.body["kind"], kind, "{path}");
        assert_owned(&request.body);
        bodies.push((path, request.body.clone()));
        request.echo();
    }
    bodies
}

fn body_of<'a>(bodies: &'a [(String, Value)], suffix: &str) -> &'a Value {
    &bodies
        .iter()
        .find(|(p, _)| p.ends_with(suffix))
        .unwrap_or_else(|| panic!("no apply of {suffix}"))
        .1
}

fn env_value<'a>(set: &'a Value, name: &str) -> Option<&'a str> {
    set["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

async fn status_patch(handle: &mut Handle) -> Value {
    let path = format!("/apis/shmdb.io/v1alpha1/namespaces/{NS}/sharedmemdatabases/{DB}/status");
    let request = expect(handle, Method::PATCH, &path).await;
    assert_applied(&request.query);
    assert!(
        request.body.get("spec").is_none(),
        "status patch must not touch the spec"
    );
    let body = request.body.clone();
    let mut object = serde_json::to_value(finalized()).expect("db json");
    object["status"] = body["status"].clone();
    request.respond(StatusCode::OK, &object);
    body
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {status}"))
}

async fn run(db: SharedMemDatabase, client: kube::Client) -> kube::runtime::controller::Action {
    tokio::time::timeout(
        Duration::from_secs(20),
        reconcile(Arc::new(db), context(client)),
    )
    .await
    .expect("reconcile finished (an unexpected request would hang it)")
    .expect("reconcile succeeded")
}

#[tokio::test]
async fn first_reconcile_adds_the_finalizer_and_nothing_else() {
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        let path = format!("/apis/shmdb.io/v1alpha1/namespaces/{NS}/sharedmemdatabases/{DB}");
        let request = expect(&mut handle, Method::PATCH, &path).await;
        let ops = request.body.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
            "{}",
            request.body
        );
        let mut db = serde_json::to_value(finalized()).expect("db json");
        db["metadata"]["finalizers"] = json!([FINALIZER]);
        request.respond(StatusCode::OK, &db);
    });
    run(example_database(DB, NS), client).await;
    server.await.expect("scenario");
}

/// An operator limited to `shmdb.io/operator=in-cluster` is handed a database without
/// that label (e.g. relabelled after the watch event): no request at all, not even for the
/// finalizer, also when the database is being deleted; the same database labelled for it
/// is reconciled (its first request is the finalizer patch).
#[tokio::test]
async fn a_database_outside_the_selector_is_not_reconciled() {
    let selector: DatabaseSelector = "shmdb.io/operator=in-cluster".parse().expect("selector");
    let scoped = |client| {
        let ctx = Arc::into_inner(context(client)).expect("one reference");
        Arc::new(ctx.with_selector(selector.clone()))
    };
    let mut others = finalized();
    others
        .metadata
        .labels
        .get_or_insert_default()
        .insert("shmdb.io/operator".into(), "host".into());
    let mut deleting = finalized();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    for db in [example_database(DB, NS), finalized(), others, deleting] {
        // The mock answers nothing: a request would hang the reconcile past the timeout.
        let (client, _handle) = mock_api::client();
        let action = tokio::time::timeout(
            Duration::from_secs(5),
            reconcile(Arc::new(db.clone()), scoped(client)),
        )
        .await
        .unwrap_or_else(|_| panic!("reconcile of {:?} sent a request", db.metadata.labels))
        .expect("reconcile succeeded");
        assert_eq!(action, Action::await_change());
    }

    let mut mine = example_database(DB, NS);
    mine.metadata
        .labels
        .get_or_insert_default()
        .insert("shmdb.io/operator".into(), "in-cluster".into());
    let (client, mut handle) = mock_api::client();
    let reconciling = tokio::spawn(reconcile(Arc::new(mine), scoped(client)));
    let path = format!("/apis/shmdb.io/v1alpha1/namespaces/{NS}/sharedmemdatabases/{DB}");
    let request = expect(&mut handle, Method::PATCH, &path).await;
    assert!(
        request.body.to_string().contains(FINALIZER),
        "{}",
        request.body
    );
    reconciling.abort();
}

#[tokio::test]
async fn first_reconcile_creates_every_object_with_owner_references() {
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        discovery_without_extras(&mut handle).await;
        let bodies = serve_applies(&mut handle).await;
        let storage = body_of(&bodies, "statefulsets/orders-storage");
        assert_eq!(storage["spec"]["replicas"], 4);
        assert_eq!(storage["spec"]["serviceName"], "orders-storage-headless");
        assert_eq!(env_value(storage, "SHMDB_MEMORY_LIMIT"), Some("1073741824"));
        let container = &storage["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        let pod = &storage["spec"]["template"]["spec"];
        assert!(pod["affinity"]["podAntiAffinity"].is_object(), "{pod}");
        assert_eq!(
            pod["topologySpreadConstraints"][0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        let hpa = body_of(&bodies, "horizontalpodautoscalers/orders-processing");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "SharedMemDatabase");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["apiVersion"],
            "shmdb.io/v1alpha1"
        );
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 8);
        let client_service = body_of(&bodies, "services/orders");
        assert_eq!(client_service["spec"]["ports"][0]["port"], 5432);
        let pdb = body_of(&bodies, "poddisruptionbudgets/orders-storage");
        assert_eq!(
            pdb["spec"]["maxUnavailable"], 1,
            "RF 2 tolerates one storage pod down"
        );
        let status = status_patch(&mut handle).await;
        assert_eq!(status["status"]["observedGeneration"], 1);
        assert_eq!(status["status"]["endpoint"], "orders.shop.svc:5432");
        assert!(
            status["status"]["processing"]["selector"]
                .as_str()
                .is_some_and(|s| s.contains("app.kubernetes.io/component=processing")),
            "{status}"
        );
        assert_eq!(condition(&status, "Degraded")["status"], "False");
        assert_eq!(
            condition(&status, "Ready")["status"],
            "False",
            "no pod is ready yet"
        );
        assert_eq!(status["status"]["storage"]["targetReplicas"], 4);
    });
    run(finalized(), client).await;
    server.await.expect("scenario");
}

#[tokio::test]
async fn a_spec_change_patches_the_objects() {
    let mut db = finalized();
    db.metadata.generation = Some(2);
    db.spec.storage.memory_per_node =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into());
    db.spec.processing.args = vec!["--buffer=shared-record".into()];
    if let Some(a) = db.spec.processing.autoscaling.as_mut() {
        a.max_replicas = 12;
    }
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        discovery_without_extras(&mut handle).await;
        let bodies = serve_applies(&mut handle).await;
        let storage = body_of(&bodies, "statefulsets/orders-storage");
        assert_eq!(env_value(storage, "SHMDB_MEMORY_LIMIT"), Some("2147483648"));
        let processing = body_of(&bodies, "statefulsets/orders-processing");
        // The user's args follow the command that sets the node id from the ordinal.
        let command = &processing["spec"]["template"]["spec"]["containers"][0]["command"];
        let command = command.as_array().cloned().unwrap_or_default();
        assert_eq!(command.last(), Some(&json!("--buffer=shared-record")));
        assert_eq!(
            command.get(command.len().wrapping_sub(2)),
            Some(&json!("--"))
        );
        let hpa = body_of(&bodies, "horizontalpodautoscalers/orders-processing");
        assert_eq!(hpa["spec"]["maxReplicas"], 12);
        let status = status_patch(&mut handle).await;
        assert_eq!(status["status"]["observedGeneration"], 2);
    });
    run(db, client).await;
    server.await.expect("scenario");
}

#[tokio::test]
async fn an_hpa_driven_replica_change_is_not_reverted() {
    // The HPA scaled the database through its scale subresource: spec.processing.replicas
    // went from 2 to 6, while the status still reports 2.
    let mut db = finalized();
    db.spec.processing.replicas = 6;
    db.metadata.generation = Some(3);
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        discovery_without_extras(&mut handle).await;
        let bodies = serve_applies(&mut handle).await;
        let processing = body_of(&bodies, "statefulsets/orders-processing");
        assert_eq!(
            processing["spec"]["replicas"], 6,
            "the operator follows the HPA"
        );
        let commit = body_of(&bodies, "statefulsets/orders-commit");
        assert!(
            commit["spec"].get("replicas").is_none(),
            "the commit-manager HPA owns its StatefulSet's replicas: {commit}"
        );
        let hpa = body_of(&bodies, "horizontalpodautoscalers/orders-processing");
        assert!(hpa["spec"].get("replicas").is_none());
        // Only the status subresource of the database is written, never its spec.
        status_patch(&mut handle).await;
    });
    run(db, client).await;
    server.await.expect("scenario");
}

#[tokio::test]
async fn deletion_cleans_up_through_the_finalizer() {
    let mut db = finalized();
    db.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        let event = expect(
            &mut handle,
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        )
        .await;
        assert_eq!(event.body["reason"], "Deleting");
        assert_eq!(event.body["regarding"]["name"], DB);
        event.echo();
        let path = format!("/apis/shmdb.io/v1alpha1/namespaces/{NS}/sharedmemdatabases/{DB}");
        let request = expect(&mut handle, Method::PATCH, &path).await;
        let ops = request.body.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
            "{}",
            request.body
        );
        let mut done = serde_json::to_value(example_database(DB, NS)).expect("json");
        done["metadata"]["finalizers"] = json!([]);
        request.respond(StatusCode::OK, &done);
    });
    run(db, client).await;
    server.await.expect("scenario");
}

#[tokio::test]
async fn an_invalid_spec_yields_degraded_and_an_event_and_changes_nothing() {
    let mut db = finalized();
    db.spec.storage.memory_per_node =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into());
    db.spec.replication_factor = 5;
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        let event = expect(
            &mut handle,
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        )
        .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "InvalidSpec");
        let note = event.body["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("spec.storage.memoryPerNode"), "{note}");
        assert!(note.contains("replicationFactor"), "{note}");
        event.echo();
        let status = status_patch(&mut handle).await;
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidSpec");
        assert!(
            degraded["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.storage.memoryPerNode")),
            "{degraded}"
        );
        assert_eq!(condition(&status, "Ready")["status"], "False");
    });
    let action = run(db, client).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    server.await.expect("scenario");
}

#[tokio::test]
async fn monitors_are_applied_only_when_the_prometheus_operator_is_installed() {
    let mut db = finalized();
    db.spec.monitoring.pod_monitor = true;
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        let discovery = expect(&mut handle, Method::GET, "/apis/monitoring.coreos.com/v1").await;
        discovery.respond(
            StatusCode::OK,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                "resources": [
                    {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true, "kind": "ServiceMonitor", "verbs": ["get", "patch"]},
                    {"name": "podmonitors", "singularName": "podmonitor", "namespaced": true, "kind": "PodMonitor", "verbs": ["get", "patch"]}
                ]
            }),
        );
        expect(
            &mut handle,
            Method::GET,
            "/apis/custom.metrics.k8s.io/v1beta2",
        )
        .await
        .not_found();
        serve_applies(&mut handle).await;
        for (plural, kind) in [
            ("servicemonitors", "ServiceMonitor"),
            ("podmonitors", "PodMonitor"),
        ] {
            let path = format!("/apis/monitoring.coreos.com/v1/namespaces/{NS}/{plural}/{DB}");
            let request = expect(&mut handle, Method::PATCH, &path).await;
            assert_applied(&request.query);
            assert_eq!(request.body["kind"], kind);
            assert_owned(&request.body);
            request.echo();
        }
        status_patch(&mut handle).await;
    });
    run(db, client).await;
    server.await.expect("scenario");
}

#[tokio::test]
async fn a_storage_scale_in_keeps_the_pods_until_they_are_drained() {
    // The autoscaler decided 3 storage nodes earlier; pod 3 still holds ranges.
    let mut db = finalized();
    db.status = Some(shmdb_operator::crd::SharedMemDatabaseStatus {
        storage: Some(shmdb_operator::crd::StorageTierStatus {
            replicas: 4,
            ready_replicas: 4,
            target_replicas: 3,
            draining: vec![3],
            ..Default::default()
        }),
        ..Default::default()
    });
    let (client, mut handle) = mock_api::client();
    let server = tokio::spawn(async move {
        discovery_without_extras(&mut handle).await;
        let bodies = serve_applies(&mut handle).await;
        let storage = body_of(&bodies, "statefulsets/orders-storage");
        assert_eq!(
            storage["spec"]["replicas"], 4,
            "no pod goes before it is drained"
        );
        let status = status_patch(&mut handle).await;
        assert_eq!(status["status"]["storage"]["targetReplicas"], 3);
        assert_eq!(status["status"]["storage"]["draining"], json!([3]));
        assert_eq!(condition(&status, "Progressing")["status"], "True");
    });
    run(db, client).await;
    server.await.expect("scenario");
}
