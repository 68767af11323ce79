//! `/readyz` of the operator answers ready only after the Kubernetes API answered a list
//! of SharedMemDatabases: an API that refuses keeps it not ready, with the error as the
//! reason, and it turns ready at the first answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::json;
use shmdb_operator::readiness::ready_when_api_answers;
use shmdb_telemetry::Health;

/// An API that refuses the first `refusals` requests with 503, then lists no databases;
/// it records the path of every request and whether the operator was ready when it came.
#[derive(Clone)]
struct FlakyApi {
    refusals: usize,
    seen: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    ready_at_request: Arc<Mutex<Vec<bool>>>,
    health: Health,
}

impl FlakyApi {
    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(&req)) }
        });
        kube::Client::new(service, "default")
    }

    fn answer(&self, req: &Request<Body>) -> Response<Body> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        self.paths.lock().push(req.uri().path().to_string());
        self.ready_at_request.lock().push(self.health.is_ready());
        let (code, body) = if n < self.refusals {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "ServiceUnavailable", "code": 503, "message": "etcd is down"}),
            )
        } else {
            (
                StatusCode::OK,
                json!({"apiVersion": "shmdb.io/v1alpha1", "kind": "SharedMemDatabaseList",
                       "metadata": {"resourceVersion": "1"}, "items": []}),
            )
        };
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

fn flaky(refusals: usize) -> FlakyApi {
    let health = Health::new();
    // As the process starts: the endpoint comes up before the API was tried.
    health.set_ready();
    FlakyApi {
        refusals,
        seen: Arc::new(AtomicUsize::new(0)),
        paths: Arc::new(Mutex::new(Vec::new())),
        ready_at_request: Arc::new(Mutex::new(Vec::new())),
        health,
    }
}

#[tokio::test]
async fn ready_only_after_the_api_answered() -> anyhow::Result<()> {
    let api = flaky(3);
    tokio::time::timeout(
        Duration::from_secs(30),
        ready_when_api_answers(api.client(), api.health.clone(), Duration::from_millis(1)),
    )
    .await?;
    assert!(api.health.is_ready());
    assert_eq!(api.seen.load(Ordering::SeqCst), 4);
    assert_eq!(*api.ready_at_request.lock(), [false, false, false, false]);
    assert!(
        api.paths
            .lock()
            .iter()
            .all(|p| p == "/apis/shmdb.io/v1alpha1/sharedmemdatabases"),
        "{:?}",
        api.paths.lock()
    );
    Ok(())
}

#[tokio::test]
async fn an_api_that_keeps_refusing_keeps_it_not_ready_with_the_reason() -> anyhow::Result<()> {
    let api = flaky(usize::MAX);
    let task = tokio::spawn(ready_when_api_answers(
        api.client(),
        api.health.clone(),
        Duration::from_millis(1),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.seen.load(Ordering::SeqCst) < 3 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the API was not retried"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!api.health.is_ready());
    let reason = api.health.not_ready_reason().unwrap_or_default();
    assert!(reason.contains("etcd is down"), "{reason}");
    task.abort();
    Ok(())
}
