//! A tiny stateful fake of the Kubernetes API for namespaced objects (GET, POST, PUT,
//! DELETE) with resourceVersion preconditions, so compare-and-swap stores and Leases can be
//! exercised by many concurrent clients without a cluster.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Objects by path (`/api/v1/namespaces/ns/configmaps/name`).
#[derive(Default, Clone)]
pub struct FakeApi {
    /// The stored objects.
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    next_rv: Arc<Mutex<u64>>,
    /// Writes refused with 409.
    pub conflicts: Arc<Mutex<u64>>,
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": reason, "code": code.as_u16(), "message": reason});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("status json")))
        .expect("response")
}

fn ok(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("object json")))
        .expect("response")
}

impl FakeApi {
    /// A client talking to this fake.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    fn bump(&self) -> String {
        let mut rv = self.next_rv.lock();
        *rv += 1;
        rv.to_string()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest"),
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match parts.method {
            Method::GET => match self.objects.lock().get(&path) {
                Some(obj) => ok(StatusCode::OK, obj),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                let mut objects = self.objects.lock();
                if objects.contains_key(&key) {
                    *self.conflicts.lock() += 1;
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(self.bump());
                objects.insert(key, obj.clone());
                ok(StatusCode::CREATED, &obj)
            }
            Method::PUT => {
                let mut objects = self.objects.lock();
                let Some(stored) = objects.get(&path) else {
                    return status(StatusCode::NOT_FOUND, "NotFound");
                };
                let want = body["metadata"]["resourceVersion"].as_str();
                if want.is_some() && want != stored["metadata"]["resourceVersion"].as_str() {
                    *self.conflicts.lock() += 1;
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(self.bump());
                objects.insert(path, obj.clone());
                ok(StatusCode::OK, &obj)
            }
            Method::DELETE => match self.objects.lock().remove(&path) {
                Some(obj) => ok(StatusCode::OK, &obj),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}
