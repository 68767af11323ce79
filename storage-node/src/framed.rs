//! The framed TCP data path of a storage node: batches and scans as length-prefixed
//! `StreamRequest` frames on plain TCP connections, answered by the same code as the gRPC
//! `Stream` method ([`crate::stream::answer`]), without HTTP/2.
//!
//! Why: HTTP/2 and its layers were about half of the server CPU on the data path even with
//! requests multiplexed over one gRPC stream (BENCHMARKS.md). Clients learn the port with
//! the `FramedEndpoint` RPC. Each connection runs like a stream: its requests run
//! concurrently and each is answered, tagged with its id, as soon as it is done; a writer
//! task puts every answer queued at the time into one socket write. A frame that cannot be
//! decoded (or announces more than the message limit) closes that connection with a logged
//! error; nothing a client sends can make the node allocate more than one capped frame per
//! connection or stop serving others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use shmdb_proto::storage as pb;
use shmdb_store_client::FramedMetrics;
use shmdb_store_client::framed::codec::{self, FrameError, FrameReader};
use shmdb_store_client::framed::metrics::Direction;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::node::Node;

/// The framed listener of a node and its open connections.
#[derive(Debug)]
pub struct FramedServer {
    /// The bound address (its port is what `FramedEndpoint` answers).
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Connections>>,
}

/// The connections being served, so [`FramedServer::abort`] can end them all.
#[derive(Debug, Default)]
struct Connections {
    open: HashMap<u64, AbortHandle>,
    /// Set by [`FramedServer::abort`], so that a connection accepted while it runs is
    /// ended instead of listed and left running.
    aborted: bool,
}

impl FramedServer {
    /// Serves `node` on `listener` until stopped; `stopping` turning true ends every
    /// connection once the requests it is running are answered.
    pub fn start(
        listener: TcpListener,
        node: Arc<Node>,
        max_frame: usize,
        metrics: FramedMetrics,
        stopping: watch::Receiver<bool>,
    ) -> std::io::Result<FramedServer> {
        let addr = listener.local_addr()?;
        let connections: Arc<Mutex<Connections>> = Arc::default();
        let accept = tokio::spawn(accept(
            listener,
            node,
            max_frame,
            metrics,
            stopping,
            connections.clone(),
        ));
        Ok(FramedServer {
            addr,
            accept,
            connections,
        })
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.lock().open.len()
    }

    /// Stops accepting; open connections end on their own once the node's stop signal has
    /// turned true (answering what they are running first).
    pub fn stop_accepting(&self) {
        self.accept.abort();
    }

    /// Drops every connection at once, as a crash would: requests in flight get no answer.
    pub fn abort(&self) {
        self.accept.abort();
        let connections: Vec<_> = {
            let mut list = self.connections.lock();
            list.aborted = true;
            list.open.drain().map(|(_, c)| c).collect()
        };
        for connection in connections {
            connection.abort();
        }
    }
}

async fn accept(
    listener: TcpListener,
    node: Arc<Node>,
    max_frame: usize,
    metrics: FramedMetrics,
    stopping: watch::Receiver<bool>,
    connections: Arc<Mutex<Connections>>,
) {
    let next_id = AtomicU64::new(1);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the listener itself is fine.
                tracing::warn!(error = %e, "framed data path: accept failed");
                metrics.connection_errors.inc();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if *stopping.borrow() {
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        // Not locked while spawning: a runtime shutting down drops the task in `spawn`,
        // and its guard takes the same lock.
        let task = tokio::spawn(serve(
            socket,
            peer,
            node.clone(),
            max_frame,
            metrics.clone(),
            stopping.clone(),
            Registered {
                id,
                connections: connections.clone(),
            },
        ));
        let aborted = {
            let mut list = connections.lock();
            // A task already over has dropped its guard, which found nothing to remove; one
            // ending now waits for this lock and removes the entry after it.
            if !list.aborted && !task.is_finished() {
                list.open.insert(id, task.abort_handle());
            }
            list.aborted
        };
        if aborted {
            task.abort();
        }
    }
}

/// Removes a connection from the server's list when its task ends (or is aborted).
struct Registered {
    id: u64,
    connections: Arc<Mutex<Connections>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().open.remove(&self.id);
    }
}

/// Aborts the writer task when the connection's task ends, however it ends.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one connection: reads requests until the client closes its side (or the node
/// stops), runs them concurrently, and queues each answer for the writer as it is done.
async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    max_frame: usize,
    metrics: FramedMetrics,
    mut stopping: watch::Receiver<bool>,
    _registered: Registered,
) {
    if let Err(e) = socket.set_nodelay(true) {
        tracing::warn!(%peer, error = %e, "framed data path: TCP_NODELAY not set");
    }
    metrics.connections.inc();
    let _open = OpenConnection(metrics.connections.clone());
    let (read, write) = socket.into_split();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel::<pb::StreamResponse>();
    let writer = tokio::spawn(codec::write_frames(
        write,
        answers_rx,
        max_frame,
        metrics.clone(),
    ));
    let writer_guard = AbortOnDrop(writer.abort_handle());
    let mut frames = FrameReader::new(read, max_frame);
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    // False once the node's stop signal is gone (a node dropped without shutdown keeps
    // serving), so the arm below does not fire again and again.
    let mut watching = true;
    while reading || !running.is_empty() {
        tokio::select! {
            stop = stopping.wait_for(|stop| *stop), if reading && watching => {
                if stop.is_ok() {
                    tracing::debug!(%peer, "node stopping: ending a framed connection");
                    reading = false;
                } else {
                    watching = false;
                }
            }
            frame = frames.next::<pb::StreamRequest>(), if reading => match frame {
                Ok(Some((request, wire))) => {
                    metrics.count(Direction::Received, 1, wire);
                    running.push(crate::stream::answer(node.clone(), request, max_frame));
                }
                Ok(None) => reading = false,
                Err(FrameError::Io(e)) => {
                    // The client went away: nobody is left to read the answers.
                    tracing::debug!(%peer, error = %e, "framed connection ended by its client");
                    metrics.connection_errors.inc();
                    return;
                }
                Err(e) => {
                    tracing::error!(%peer, error = %e, "bad frame from a client; closing its connection");
                    metrics.connection_errors.inc();
                    return;
                }
            },
            Some(answer) = running.next(), if !running.is_empty() => {
                if answers_tx.send(answer).is_err() {
                    return;
                }
            }
        }
    }
    // Every answer is queued: let the writer send them and close the connection.
    drop(answers_tx);
    match writer.await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "framed connection: last answers not sent")
        }
    }
    drop(writer_guard);
}

/// Keeps the open-connections gauge while a connection is served.
struct OpenConnection(prometheus::IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::Read as _;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::config::NodeConfig;
    use crate::metrics::NodeMetrics;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A framed server on `runtime` for an empty node, and its stop signal.
    fn serve_on(runtime: &tokio::runtime::Runtime) -> (FramedServer, watch::Sender<bool>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = runtime
            .block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let node = Node::new(
                    NodeConfig::local(1, listener.local_addr()?),
                    NodeMetrics::new(1).map_err(std::io::Error::other)?,
                );
                let metrics = FramedMetrics::new().map_err(std::io::Error::other)?;
                FramedServer::start(listener, node, 1 << 20, metrics, stop_rx)
            })
            .expect("server");
        (server, stop_tx)
    }

    /// A thread connecting to `addr` as fast as it can, keeping the last connections open.
    struct Dialer {
        dialing: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<VecDeque<std::net::TcpStream>>,
    }

    impl Dialer {
        fn start(addr: SocketAddr) -> Dialer {
            let dialing = Arc::new(AtomicBool::new(true));
            let thread = {
                let dialing = dialing.clone();
                std::thread::spawn(move || {
                    let mut held = VecDeque::new();
                    while dialing.load(Ordering::Relaxed) {
                        let dialed =
                            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50));
                        if let Ok(s) = dialed {
                            held.push_back(s);
                        }
                        if held.len() > 64 {
                            held.pop_front();
                        }
                    }
                    held
                })
            };
            Dialer { dialing, thread }
        }

        /// Stops dialing; the connections it still holds.
        fn stop(self) -> VecDeque<std::net::TcpStream> {
            self.dialing.store(false, Ordering::Relaxed);
            self.thread.join().expect("dialer")
        }
    }

    /// Waits (at most five seconds) until `server` serves a few connections.
    fn some_connections(runtime: &tokio::runtime::Runtime, server: &FramedServer) {
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while server.connections() < 4 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// A runtime shutting down while the listener accepts a connection: the spawn of the
    /// connection's task then drops it at once, and its guard must not wait on a lock the
    /// accepting task holds (that hung the shutdown for good, and with it any process
    /// dropping an in-process node).
    #[test]
    fn a_runtime_shuts_down_while_connections_arrive() {
        for round in 0..20 {
            let runtime = runtime();
            let (server, _stop) = serve_on(&runtime);
            let dialer = Dialer::start(server.addr);
            some_connections(&runtime, &server);
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(runtime);
                let _ = done_tx.send(());
            });
            let finished = done_rx.recv_timeout(Duration::from_secs(20));
            dialer.stop();
            assert!(
                finished.is_ok(),
                "round {round}: the runtime did not shut down"
            );
        }
    }

    /// `abort` is a crash: every connection ends, also one accepted while it runs.
    #[test]
    fn abort_ends_every_connection_while_connections_arrive() {
        let runtime = runtime();
        for round in 0..20 {
            let (server, _stop) = serve_on(&runtime);
            let dialer = Dialer::start(server.addr);
            some_connections(&runtime, &server);
            server.abort();
            for mut socket in dialer.stop() {
                socket
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut buf = [0u8; 8];
                match socket.read(&mut buf) {
                    Ok(0) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    other => panic!("round {round}: a connection outlived abort: {other:?}"),
                }
            }
            assert_eq!(server.connections(), 0, "round {round}");
        }
    }
}
