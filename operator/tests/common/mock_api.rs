//! A scripted mock API server (tower-test): each scenario states the requests it expects,
//! in order, with their method, path and body, and what the server answers.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// The test's end of the mock service.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A mock client and the handle that serves its requests.
pub fn client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One request the scenario received.
pub struct Received {
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The body as JSON (Null when empty).
    pub body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Received {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("serialize response");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response");
        self.send.send_response(response);
    }

    /// Answers 200 with the request's own body (what server-side apply returns).
    pub fn echo(self) {
        let body = self.body.clone();
        self.respond(StatusCode::OK, &body);
    }

    /// Answers 404 NotFound.
    pub fn not_found(self) {
        self.respond(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    }
}

/// Waits for the next request and checks its method and path.
pub async fn expect(handle: &mut Handle, method: Method, path: &str) -> Received {
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
            .unwrap_or_else(|| panic!("client dropped before {method} {path}"));
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.expect("request body").to_bytes();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .or_else(|_| serde_yaml::from_slice(&bytes))
            .expect("request body is JSON or YAML")
    };
    let received = Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        body,
        send,
    };
    assert_eq!(
        (&received.method, received.path.as_str()),
        (&method, path),
        "unexpected request; body: {}",
        received.body
    );
    received
}
