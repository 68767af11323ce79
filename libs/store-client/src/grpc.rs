//! The gRPC implementation of [`Transport`]: one cached tonic channel per storage node,
//! carrying batches and scans as unary calls or multiplexed over `Stream` sessions.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::admin_client::AdminClient;
use shmdb_proto::storage::storage_client::StorageClient;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tonic::transport::{Channel, Endpoint};

use crate::session::{OpenError, Route, Sent, Sessions};
use crate::transport::{Transport, TransportError};

/// How batches and scans travel to storage nodes over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// One unary `Batch` / `Scan` call per request: an HTTP/2 stream, headers and a handler
    /// task each. Kept as the fallback and for comparison.
    Unary,
    /// Requests multiplexed over long-lived gRPC `Stream` RPCs, one message each way per
    /// request; nodes without the method are served with unary calls. It costs a fraction
    /// of the CPU per request of `Unary` (BENCHMARKS.md, "Streaming transport").
    Stream,
    /// The same messages as `Stream`, length-prefixed on plain TCP connections with no
    /// HTTP/2 at all ([`FramedTransport`](crate::FramedTransport)); nodes that offer no
    /// framed endpoint are served with `Stream`. The default: the cheapest per request
    /// (BENCHMARKS.md, "Framed TCP data path"). A [`GrpcTransport`] given it uses `Stream`.
    #[default]
    Framed,
}

/// The environment variable that overrides the default [`DataPath`] (`framed`, `stream` or
/// `unary`)
/// of every component that builds its transport from defaults: a switch back to unary calls
/// without a rebuild, and how benchmarks compare the two with the same binaries.
pub const DATA_PATH_ENV: &str = "SHMDB_STORAGE_DATA_PATH";

impl DataPath {
    /// The data path [`DATA_PATH_ENV`] asks for, or the default when it is unset; a value
    /// that is none of `framed`, `stream`, `unary` is logged and ignored (a process must not fail
    /// to start over a tuning knob).
    pub fn from_env() -> DataPath {
        match std::env::var(DATA_PATH_ENV) {
            Ok(value) => value.parse().unwrap_or_else(|e: UnknownDataPath| {
                tracing::warn!(error = %e, "{DATA_PATH_ENV} ignored");
                DataPath::default()
            }),
            Err(_) => DataPath::default(),
        }
    }

    /// The flag spelling (`unary`, `stream`, `framed`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataPath::Unary => "unary",
            DataPath::Stream => "stream",
            DataPath::Framed => "framed",
        }
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data-path value that is none of `framed`, `stream`, `unary`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown storage data path {0:?}: expected framed, stream or unary")]
pub struct UnknownDataPath(pub String);

impl std::str::FromStr for DataPath {
    type Err = UnknownDataPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unary" => Ok(DataPath::Unary),
            "stream" => Ok(DataPath::Stream),
            "framed" => Ok(DataPath::Framed),
            _ => Err(UnknownDataPath(s.to_owned())),
        }
    }
}

/// Connection settings of [`GrpcTransport`].
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Bound on establishing a connection, so a dead node costs little before the client
    /// moves on to a refreshed map.
    pub connect_timeout: Duration,
    /// Bound on one request's round trip; exceeding it is reported as
    /// [`TransportError::Timeout`] (the request may have been applied).
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval, so a silently dead peer is noticed on idle
    /// connections instead of at the next request.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// Largest response accepted (a batch of large reads can exceed tonic's 4 MiB default).
    pub max_message_size: usize,
    /// Unary calls or multiplexed streams for batches and scans (`Framed` is served as
    /// `Stream` here); the default follows [`DATA_PATH_ENV`] when set.
    pub data_path: DataPath,
    /// Sessions per storage node with [`DataPath::Stream`], used round-robin (each is one
    /// HTTP/2 stream on the node's one connection, served by its own task on the node).
    pub streams_per_node: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_message_size: 64 << 20,
            data_path: DataPath::from_env(),
            streams_per_node: 1,
        }
    }
}

/// A cached connection; `generation` tells whether the entry was replaced since a caller
/// took it, so a failure seen on an old channel does not drop a fresh one.
struct Cached {
    channel: Channel,
    generation: u64,
}

#[derive(Default)]
struct Entry {
    cached: Option<Cached>,
    /// Failed connection attempts so far and the last one's error: callers that queued
    /// behind a failing attempt fail with it at once instead of each waiting out their own
    /// connect timeout in turn.
    failures: u64,
    last_failure: String,
    /// Serialises connection attempts to one address, so a burst of requests to a node that
    /// is not yet connected opens one connection, not one per request.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

/// [`Transport`] over gRPC (tonic), the default data path until RDMA is available.
///
/// Channels are created on first use of an address, connected eagerly (so a dead node is
/// reported as [`TransportError::Unreachable`], which is safe to retry) and cached; a
/// connection failure drops the cached channel, so a node restarted at the same address is
/// reconnected on the next request.
pub struct GrpcTransport {
    config: GrpcConfig,
    entries: parking_lot::Mutex<HashMap<String, Entry>>,
    next_generation: std::sync::atomic::AtomicU64,
    sessions: Sessions,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("config", &self.config)
            .field("connections", &self.entries.lock().len())
            .finish()
    }
}

impl GrpcTransport {
    /// A transport with no connections yet; they are opened on first use.
    pub fn new(config: GrpcConfig) -> Self {
        GrpcTransport {
            sessions: Sessions::new(config.streams_per_node),
            config,
            entries: parking_lot::Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// `Stream` sessions opened so far, broken ones included (proof for tests and benches
    /// that requests travelled over streams).
    pub fn streams_opened(&self) -> u64 {
        self.sessions.opened()
    }

    /// Open `Stream` sessions that have not broken, over all nodes (for tests and status).
    pub fn open_streams(&self) -> usize {
        self.sessions.open_sessions()
    }

    /// Sends one request on a session to `addr`, within one request timeout for opening
    /// the session (if needed) and the answer. `Unary` hands the request back when the node
    /// has no `Stream` method.
    async fn on_stream(&self, addr: &str, mut body: RequestBody) -> Streamed {
        let timeout = self.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        // A second round only after a broken session or connection, on a fresh connection.
        for _ in 0..2 {
            let (channel, generation) = match self.channel(addr).await {
                Ok(c) => c,
                Err(e) => return Streamed::Answer(Err(e)),
            };
            let client = self.storage(channel);
            let session = match self
                .sessions
                .route(addr, client, generation, deadline, timeout)
                .await
            {
                Ok(Route::Stream(session)) => session,
                Ok(Route::Unary) => return Streamed::Unary(body),
                Err(OpenError::Broken(e)) => {
                    self.forget(addr, generation);
                    last = Some(e);
                    continue;
                }
                Err(OpenError::Failed(e)) => return Streamed::Answer(Err(e)),
            };
            let max = self.config.max_message_size;
            match session.call(addr, body, max, deadline, timeout).await {
                Sent::Done(result) => {
                    if let Err(TransportError::Lost(_) | TransportError::Unreachable(_)) = &result {
                        self.forget(addr, generation);
                    }
                    return Streamed::Answer(result.and_then(|answer| match answer {
                        ResponseBody::Error(e) => Err(crate::session::error_of(addr, e)),
                        answer => Ok(answer),
                    }));
                }
                Sent::NotSent(back) => {
                    self.forget(addr, generation);
                    body = back;
                }
            }
        }
        Streamed::Answer(Err(last.unwrap_or_else(|| {
            TransportError::Unreachable(format!("{addr}: no working storage stream"))
        })))
    }

    /// The cached channel to `addr`, connecting first if there is none.
    async fn channel(&self, addr: &str) -> Result<(Channel, u64), TransportError> {
        let (connecting, failures) = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(addr.to_owned()).or_default();
            if let Some(cached) = &entry.cached {
                return Ok((cached.channel.clone(), cached.generation));
            }
            (entry.connecting.clone(), entry.failures)
        };
        let _guard = connecting.lock().await;
        // Someone else may have connected, or failed to, while we waited for the lock.
        if let Some(entry) = self.entries.lock().get(addr) {
            if let Some(cached) = &entry.cached {
                return Ok((cached.channel.clone(), cached.generation));
            }
            if entry.failures != failures {
                return Err(TransportError::Unreachable(entry.last_failure.clone()));
            }
        }
        let endpoint = self.endpoint(addr)?;
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                let reason = format!("{addr}: {}", error_chain(&e));
                let mut entries = self.entries.lock();
                let entry = entries.entry(addr.to_owned()).or_default();
                entry.failures += 1;
                entry.last_failure = reason.clone();
                return Err(TransportError::Unreachable(reason));
            }
        };
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(addr, "connected to storage node");
        self.entries
            .lock()
            .entry(addr.to_owned())
            .or_default()
            .cached = Some(Cached {
            channel: channel.clone(),
            generation,
        });
        Ok((channel, generation))
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, TransportError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| TransportError::Unreachable(format!("bad address {addr:?}: {e}")))?;
        Ok(endpoint
            .tcp_nodelay(true)
            .connect_timeout(self.config.connect_timeout)
            .http2_keep_alive_interval(self.config.keepalive_interval)
            .keep_alive_timeout(self.config.keepalive_timeout)
            .keep_alive_while_idle(true))
    }

    /// Forgets the channel to `addr` if it is still the one that failed.
    fn forget(&self, addr: &str, generation: u64) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(addr)
            && entry.cached.as_ref().map(|c| c.generation) == Some(generation)
        {
            entry.cached = None;
            tracing::debug!(addr, "dropped cached connection after a failure");
        }
    }

    /// Runs one unary call with the request timeout and classifies its failure.
    async fn call<T, F, Fut>(&self, addr: &str, f: F) -> Result<T, TransportError>
    where
        F: FnOnce(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (channel, generation) = self.channel(addr).await?;
        let timeout = self.config.request_timeout;
        let result = match tokio::time::timeout(timeout, f(channel, timeout)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => classify(addr, &status),
            Err(_) => TransportError::Timeout(format!("{addr}: no answer within {timeout:?}")),
        };
        if matches!(
            result,
            TransportError::Unreachable(_) | TransportError::Lost(_)
        ) {
            self.forget(addr, generation);
        }
        Err(result)
    }

    fn storage(&self, channel: Channel) -> StorageClient<Channel> {
        StorageClient::new(channel)
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size)
    }
}

/// What [`GrpcTransport::on_stream`] did with a request.
enum Streamed {
    /// Sent on a session: its answer (an error answer already turned into its error).
    Answer(Result<ResponseBody, TransportError>),
    /// The node has no `Stream`: send this with a unary call.
    Unary(RequestBody),
}

/// A session answered a request with the wrong kind of answer (a bug on one side); the
/// request may have been applied.
pub(crate) fn mismatched(addr: &str, asked: &str, answer: &ResponseBody) -> TransportError {
    let got = match answer {
        ResponseBody::Batch(_) => "a batch answer",
        ResponseBody::Scan(_) => "a scan answer",
        ResponseBody::Error(_) => "an error",
    };
    TransportError::Lost(format!("{addr}: a {asked} request was answered with {got}"))
}

/// A request handed back for a unary call is not the kind that was sent (cannot happen:
/// `on_stream` returns the body it was given).
pub(crate) fn handed_back(addr: &str, asked: &str) -> TransportError {
    TransportError::Rejected(format!(
        "{addr}: {asked} request lost on its way to a unary call"
    ))
}

impl Default for GrpcTransport {
    fn default() -> Self {
        GrpcTransport::new(GrpcConfig::default())
    }
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    // Tells the node how long we wait, so it can drop work nobody will read.
    req.set_timeout(timeout);
    req
}

#[async_trait]
impl Transport for GrpcTransport {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        let req = match self.config.data_path {
            DataPath::Unary => req,
            DataPath::Stream | DataPath::Framed => {
                match self.on_stream(addr, RequestBody::Batch(req)).await {
                    Streamed::Answer(Ok(ResponseBody::Batch(response))) => return Ok(response),
                    Streamed::Answer(Ok(other)) => return Err(mismatched(addr, "batch", &other)),
                    Streamed::Answer(Err(e)) => return Err(e),
                    Streamed::Unary(RequestBody::Batch(req)) => req,
                    Streamed::Unary(_) => return Err(handed_back(addr, "batch")),
                }
            }
        };
        self.call(addr, |channel, timeout| async move {
            self.storage(channel).batch(request(req, timeout)).await
        })
        .await
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        let req = match self.config.data_path {
            DataPath::Unary => req,
            DataPath::Stream | DataPath::Framed => {
                match self.on_stream(addr, RequestBody::Scan(req)).await {
                    Streamed::Answer(Ok(ResponseBody::Scan(response))) => return Ok(response),
                    Streamed::Answer(Ok(other)) => return Err(mismatched(addr, "scan", &other)),
                    Streamed::Answer(Err(e)) => return Err(e),
                    Streamed::Unary(RequestBody::Scan(req)) => req,
                    Streamed::Unary(_) => return Err(handed_back(addr, "scan")),
                }
            }
        };
        self.call(addr, |channel, timeout| async move {
            self.storage(channel).scan(request(req, timeout)).await
        })
        .await
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        self.call(addr, |channel, timeout| async move {
            AdminClient::new(channel)
                .max_decoding_message_size(self.config.max_message_size)
                .get_map(request(pb::GetMapRequest {}, timeout))
                .await
        })
        .await
    }
}

impl GrpcTransport {
    /// Asks the node at `addr` for the port of its framed TCP data path: `Ok(Ok(port))`,
    /// or `Ok(Err(why))` when it offers none (a node that predates the method, or one run
    /// with `--transport grpc`); `Err` when the node could not be asked.
    pub async fn framed_port(&self, addr: &str) -> Result<Result<u16, String>, TransportError> {
        let asked = self
            .call(addr, |channel, timeout| async move {
                self.storage(channel)
                    .framed_endpoint(request(pb::FramedEndpointRequest {}, timeout))
                    .await
            })
            .await;
        match asked {
            Ok(answer) => match u16::try_from(answer.port) {
                Ok(port) if port != 0 => Ok(Ok(port)),
                _ => Ok(Err(format!(
                    "{addr}: no usable framed port ({})",
                    answer.port
                ))),
            },
            // Refused as a whole: UNIMPLEMENTED, FAILED_PRECONDITION and the like.
            Err(TransportError::Rejected(why)) => Ok(Err(why)),
            Err(e) => Err(e),
        }
    }
}

/// Maps a failed call to what it means for the request: a connect error proves nothing was
/// sent; a timeout or a broken stream leaves the outcome unknown; statuses a server only
/// returns before running a handler mean "refused".
pub(crate) fn classify(addr: &str, status: &tonic::Status) -> TransportError {
    let text = format!("{addr}: {}", error_chain(status));
    let mut source: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return TransportError::Unreachable(text);
        }
        if err.is::<tonic::TimeoutExpired>() {
            return TransportError::Timeout(text);
        }
        source = err.source();
    }
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded => TransportError::Timeout(text),
        // The node enforces the grpc-timeout we send and answers CANCELLED "Timeout expired"
        // (tonic's TimeoutExpired) when it fires first: the same deadline as ours.
        Code::Cancelled if status.message() == tonic::TimeoutExpired(()).to_string() => {
            TransportError::Timeout(text)
        }
        Code::Unimplemented
        | Code::InvalidArgument
        | Code::OutOfRange
        | Code::NotFound
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::ResourceExhausted => TransportError::Rejected(text),
        _ => TransportError::Lost(text),
    }
}

/// An error and its causes on one line, for logs and error messages.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !out.contains(&cause_text) {
            out.push_str(": ");
            out.push_str(&cause_text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_what_they_mean_for_the_data() {
        let t = |s: tonic::Status| classify("n1", &s);
        assert!(matches!(
            t(tonic::Status::unavailable("reset")),
            TransportError::Lost(_)
        ));
        assert!(matches!(
            t(tonic::Status::deadline_exceeded("slow")),
            TransportError::Timeout(_)
        ));
        assert!(matches!(
            t(tonic::Status::unimplemented("no")),
            TransportError::Rejected(_)
        ));
        // What a node sends when our grpc-timeout expires on its side first.
        assert!(matches!(
            t(tonic::Status::cancelled("Timeout expired")),
            TransportError::Timeout(_)
        ));
        assert!(matches!(
            t(tonic::Status::cancelled("client went away")),
            TransportError::Lost(_)
        ));
        let connect =
            tonic::Status::from_error(Box::new(tonic::ConnectError("connection refused".into())));
        assert!(matches!(t(connect), TransportError::Unreachable(_)));
    }

    #[test]
    fn data_paths_parse_from_their_flag_spelling_and_reject_others() {
        for path in [DataPath::Unary, DataPath::Stream, DataPath::Framed] {
            assert_eq!(path.as_str().parse::<DataPath>(), Ok(path));
            assert_eq!(path.to_string().parse::<DataPath>(), Ok(path));
        }
        assert_eq!(" STREAM ".parse::<DataPath>(), Ok(DataPath::Stream));
        let err = "grpc".parse::<DataPath>().err();
        assert_eq!(err, Some(UnknownDataPath("grpc".into())));
        assert!(err.is_some_and(|e| e.to_string().contains("framed, stream or unary")));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_not_cached() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let addr = format!("127.0.0.1:{port}");
        let transport = GrpcTransport::default();
        let err = transport.get_map(&addr).await.err();
        assert!(
            matches!(err, Some(TransportError::Unreachable(_))),
            "{err:?}"
        );
        assert!(
            transport
                .entries
                .lock()
                .get(&addr)
                .is_none_or(|e| e.cached.is_none())
        );
    }
}
