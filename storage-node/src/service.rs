//! The gRPC services of a storage node: data path, replication and admin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use shmdb_proto::storage::storage_client::StorageClient;
use tonic::transport::{Channel, Endpoint};

use shmdb_proto::storage::{self as pb, admin_server, replication_server, storage_server};
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;

/// The answers of a `ReplicateStream`, as the replication service returns them.
pub type ReplicateAnswers =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ReplicateResponse, Status>> + Send>>;

/// Implements all three services over one shared node.
#[derive(Debug, Clone)]
pub struct NodeService {
    node: Arc<Node>,
    echo_peers: Arc<Mutex<HashMap<String, StorageClient<Channel>>>>,
    /// Turns true when the node shuts down: open `Stream`s stop reading and end, so a
    /// graceful shutdown (which waits for every open HTTP/2 stream) is not held up by
    /// clients that keep their sessions open.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The port of the framed TCP data path, if the node serves one.
    framed_port: Option<u16>,
}

impl NodeService {
    /// Wraps a node; `stopping` turning true ends the open `Stream`s.
    pub fn new(node: Arc<Node>, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        NodeService {
            node,
            echo_peers: Arc::default(),
            stopping,
            framed_port: None,
        }
    }

    /// Answers `FramedEndpoint` with `port` (`None`: the node serves no framed data path).
    pub fn with_framed_port(self, port: Option<u16>) -> Self {
        NodeService {
            framed_port: port,
            ..self
        }
    }

    fn echo_peer(&self, address: &str) -> Result<StorageClient<Channel>, Status> {
        let mut peers = self.echo_peers.lock();
        if let Some(client) = peers.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("bad forward address: {e}")))?
            .tcp_nodelay(true);
        let client = StorageClient::new(endpoint.connect_lazy());
        peers.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

#[tonic::async_trait]
impl storage_server::Storage for NodeService {
    type StreamStream = crate::stream::ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // Refused before anything is read, so the client knows nothing was applied.
        if *self.stopping.borrow() {
            return Err(Status::unavailable("storage node is shutting down"));
        }
        Ok(Response::new(crate::stream::serve(
            self.node.clone(),
            request.into_inner(),
            crate::MAX_MESSAGE_BYTES,
            self.stopping.clone(),
        )))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let started = Instant::now();
        let response = self.node.batch(request.into_inner()).await;
        self.node
            .metrics
            .request_seconds
            .with_label_values(&["batch"])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(response))
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let started = Instant::now();
        let response = self.node.scan(request.into_inner()).await;
        self.node
            .metrics
            .request_seconds
            .with_label_values(&["scan"])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(response))
    }

    async fn framed_endpoint(
        &self,
        _request: Request<pb::FramedEndpointRequest>,
    ) -> Result<Response<pb::FramedEndpointResponse>, Status> {
        match self.framed_port {
            Some(port) => Ok(Response::new(pb::FramedEndpointResponse {
                port: u32::from(port),
            })),
            None => Err(Status::failed_precondition(
                "this storage node serves no framed TCP data path (--transport grpc)",
            )),
        }
    }

    async fn echo(
        &self,
        request: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        let request = request.into_inner();
        if !request.forward.is_empty() {
            let calls = request
                .forward
                .iter()
                .map(|address| {
                    let payload = request.payload.clone();
                    let client = self.echo_peer(address);
                    async move {
                        client?
                            .echo(pb::EchoRequest {
                                payload,
                                forward: Vec::new(),
                            })
                            .await
                    }
                })
                .collect::<Vec<_>>();
            for result in futures::future::join_all(calls).await {
                result?;
            }
        }
        Ok(Response::new(pb::EchoResponse {
            payload: request.payload,
        }))
    }
}

#[tonic::async_trait]
impl replication_server::Replication for NodeService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        Ok(Response::new(crate::replication::on_replicate(
            &self.node,
            request.into_inner(),
        )))
    }

    type ReplicateStreamStream = ReplicateAnswers;

    async fn replicate_stream(
        &self,
        request: Request<Streaming<pb::ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStreamStream>, Status> {
        use futures::StreamExt as _;
        if *self.stopping.borrow() {
            return Err(Status::unavailable("storage node is shutting down"));
        }
        // Ends with the node's shutdown, which waits for every open HTTP/2 stream (a node
        // dropped without one keeps serving).
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            if stopping.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let node = self.node.clone();
        let open = crate::stream::OpenStream::new(node.metrics.replication_streams.clone());
        let answers = request
            .into_inner()
            .take_until(stopped)
            .map(move |request| {
                let _counted = &open;
                request.map(|request| crate::replication::on_replicate(&node, request))
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        crate::replication::on_snapshot(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl admin_server::Admin for NodeService {
    async fn install_map(
        &self,
        request: Request<pb::PartitionMap>,
    ) -> Result<Response<pb::InstallMapResponse>, Status> {
        let map_version = crate::admin::install_map(&self.node, request.into_inner()).await?;
        Ok(Response::new(pb::InstallMapResponse { map_version }))
    }

    async fn get_map(
        &self,
        _request: Request<pb::GetMapRequest>,
    ) -> Result<Response<pb::PartitionMap>, Status> {
        Ok(Response::new(self.node.map().to_proto()))
    }

    async fn split_range(
        &self,
        request: Request<pb::SplitRangeRequest>,
    ) -> Result<Response<pb::SplitRangeResponse>, Status> {
        crate::admin::split(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn report(
        &self,
        request: Request<pb::RangeReportRequest>,
    ) -> Result<Response<pb::RangeReport>, Status> {
        Ok(Response::new(crate::admin::report(
            &self.node,
            &request.into_inner(),
        )))
    }
}
