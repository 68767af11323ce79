//! Real gRPC: a storage node is stopped and restarted at the same address; the client's
//! cached connection must not keep it away from the restarted node.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeCluster, config};
use shmdb_store_client::proto as pb;
use shmdb_store_client::proto::admin_server::{Admin, AdminServer};
use shmdb_store_client::proto::storage_server::{Storage, StorageServer};
use shmdb_store_client::{GrpcConfig, GrpcTransport, StoreClient, StoreError, Transport};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Serves the fake cluster's answers for one node over gRPC.
#[derive(Clone)]
struct FakeNode {
    cluster: Arc<FakeCluster>,
    addr: String,
}

fn status(e: shmdb_store_client::TransportError) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl Storage for FakeNode {
    type StreamStream = futures::stream::BoxStream<'static, Result<pb::StreamResponse, Status>>;

    /// This fake predates streaming, like an older node: clients fall back to unary calls.
    async fn stream(
        &self,
        _req: Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("Stream"))
    }

    async fn batch(
        &self,
        req: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let resp = self.cluster.batch(&self.addr, req.into_inner()).await;
        resp.map(Response::new).map_err(status)
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let resp = self.cluster.scan(&self.addr, req.into_inner()).await;
        resp.map(Response::new).map_err(status)
    }

    /// Predates the framed data path too: clients use gRPC.
    async fn framed_endpoint(
        &self,
        _: Request<pb::FramedEndpointRequest>,
    ) -> Result<Response<pb::FramedEndpointResponse>, Status> {
        Err(Status::unimplemented("FramedEndpoint"))
    }

    async fn echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(pb::EchoResponse {
            payload: req.into_inner().payload,
        }))
    }
}

#[tonic::async_trait]
impl Admin for FakeNode {
    async fn install_map(
        &self,
        _: Request<pb::PartitionMap>,
    ) -> Result<Response<pb::InstallMapResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_map(
        &self,
        _: Request<pb::GetMapRequest>,
    ) -> Result<Response<pb::PartitionMap>, Status> {
        let resp = self.cluster.get_map(&self.addr).await;
        resp.map(Response::new).map_err(status)
    }

    async fn split_range(
        &self,
        _: Request<pb::SplitRangeRequest>,
    ) -> Result<Response<pb::SplitRangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn report(
        &self,
        _: Request<pb::RangeReportRequest>,
    ) -> Result<Response<pb::RangeReport>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn serve(node: FakeNode, incoming: TcpIncoming) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = Server::builder()
            .add_service(StorageServer::new(node.clone()))
            .add_service(AdminServer::new(node))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        assert!(served.is_ok(), "{served:?}");
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn the_client_reconnects_to_a_node_restarted_at_the_same_address() {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let local: SocketAddr = incoming.local_addr().expect("local addr");
    let addr = local.to_string();
    let mut map = common::map(1, 1, &[(Vec::new(), 1)]);
    map.nodes.insert(1, addr.clone());
    let cluster = FakeCluster::new(&map);
    let node = FakeNode {
        cluster: cluster.clone(),
        addr: addr.clone(),
    };
    let server = serve(node.clone(), incoming);

    let transport = Arc::new(GrpcTransport::new(GrpcConfig::default()));
    let mut cfg = config();
    cfg.seeds = vec![addr.clone()];
    let client = StoreClient::with_transport(cfg.clone(), transport.clone())
        .await
        .expect("map over gRPC");
    assert_eq!(client.map_version(), 1);
    let stamp = client.put(1, "k", "v").await.expect("put over gRPC");
    let got = client.get(1, "k").await.expect("get").expect("present");
    assert_eq!((got.value.as_ref(), got.stamp), (&b"v"[..], stamp));

    server.stop().await;
    cfg.deadline = Duration::from_millis(50);
    let impatient = StoreClient::with_map(cfg, transport.clone(), map);
    let err = impatient.get(1, "k").await.err();
    // A refused connection is classified as "nothing sent", the safe-to-retry kind.
    assert!(
        matches!(&err, Some(StoreError::DeadlineExceeded { last_error }) if last_error.starts_with("unreachable")),
        "{err:?}"
    );

    let server = serve(node, TcpIncoming::bind(local).expect("rebind"));
    let got = client.get(1, "k").await.expect("get after restart");
    assert_eq!(got.map(|v| v.stamp), Some(stamp));
    server.stop().await;
}
