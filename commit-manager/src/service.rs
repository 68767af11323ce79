//! The gRPC face of a commit manager: translates the `commit.proto` contract to [`Manager`]
//! calls and refusals to status codes.

use std::sync::Arc;

use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_server::CommitManager;
use tonic::{Request, Response, Status};

use crate::error::{Refusal, StartError};
use crate::manager::{FinishError, Manager};

/// The tonic service over a shared [`Manager`].
#[derive(Debug, Clone)]
pub struct CommitService {
    manager: Arc<Manager>,
}

impl CommitService {
    /// Serves `manager`.
    pub fn new(manager: Arc<Manager>) -> CommitService {
        CommitService { manager }
    }
}

/// The status code a refused start maps to: a full window is RESOURCE_EXHAUSTED (retrying
/// elsewhere does not help: the base is global), an unready manager UNAVAILABLE (another
/// manager may help), a bad count INVALID_ARGUMENT.
pub fn start_status(err: &StartError) -> Status {
    let message = err.to_string();
    match err {
        StartError::WindowFull { .. } => Status::resource_exhausted(message),
        StartError::BadCount { .. } => Status::invalid_argument(message),
        StartError::NoTids | StartError::NotServing(_) | StartError::LeaseTimeout(_) => {
            Status::unavailable(message)
        }
    }
}

/// The status code a refused commit or abort maps to: NOT_FOUND for a tid this manager does
/// not know, FAILED_PRECONDITION for one in the wrong state.
pub fn refusal_status(refusal: &Refusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        Refusal::UnknownTid(_) => Status::not_found(message),
        Refusal::Finished(_)
        | Refusal::AlreadyCommitted(_)
        | Refusal::AlreadyAborted(_)
        | Refusal::Recovering(_)
        | Refusal::Duplicate(_) => Status::failed_precondition(message),
    }
}

/// The status code a failed commit or abort batch maps to.
pub(crate) fn finish_status(err: &FinishError) -> Status {
    match err {
        FinishError::Refused(refusal) => refusal_status(refusal),
        FinishError::NotServing(_) => Status::unavailable(err.to_string()),
    }
}

/// The wire outcome of one commit or abort of a batch.
pub(crate) fn finish_outcome(result: &Result<(), Refusal>) -> i32 {
    let outcome = match result {
        Ok(()) => pb::FinishOutcome::Ok,
        Err(Refusal::UnknownTid(_)) => pb::FinishOutcome::UnknownTid,
        Err(Refusal::Finished(_)) => pb::FinishOutcome::Finished,
        Err(Refusal::AlreadyCommitted(_)) => pb::FinishOutcome::AlreadyCommitted,
        Err(Refusal::AlreadyAborted(_)) => pb::FinishOutcome::AlreadyAborted,
        Err(Refusal::Recovering(_)) => pb::FinishOutcome::Recovering,
        Err(Refusal::Duplicate(_)) => pb::FinishOutcome::Duplicate,
    };
    outcome as i32
}

#[tonic::async_trait]
impl CommitManager for CommitService {
    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let node = request.into_inner().processing_node_id;
        let grant = self
            .manager
            .start_batch(node, 1)
            .await
            .map_err(|e| start_status(&e))?;
        let tid = grant
            .tids
            .first()
            .copied()
            .ok_or_else(|| Status::internal("start granted no tid"))?;
        Ok(Response::new(pb::StartResponse {
            tid,
            snapshot: grant.snapshot.encoded(),
            lav: grant.lav,
            manager_id: self.manager.id(),
        }))
    }

    async fn start_batch(
        &self,
        request: Request<pb::StartBatchRequest>,
    ) -> Result<Response<pb::StartBatchResponse>, Status> {
        let request = request.into_inner();
        let grant = self
            .manager
            .start_batch(request.processing_node_id, request.count)
            .await
            .map_err(|e| start_status(&e))?;
        Ok(Response::new(pb::StartBatchResponse {
            tids: grant.tids,
            snapshot: grant.snapshot.encoded(),
            lav: grant.lav,
            manager_id: self.manager.id(),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        self.manager
            .commit(request.into_inner().tid)
            .await
            .map_err(|e| finish_status(&e))?;
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn abort(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        self.manager
            .abort(request.into_inner().tid)
            .await
            .map_err(|e| finish_status(&e))?;
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn finish_batch(
        &self,
        request: Request<pb::FinishBatchRequest>,
    ) -> Result<Response<pb::FinishBatchResponse>, Status> {
        let request = request.into_inner();
        let (commits, aborts) = self
            .manager
            .finish_batch(&request.commits, &request.aborts)
            .await
            .map_err(|e| finish_status(&e))?;
        Ok(Response::new(pb::FinishBatchResponse {
            commit_outcomes: commits.iter().map(finish_outcome).collect(),
            abort_outcomes: aborts.iter().map(finish_outcome).collect(),
        }))
    }

    type SessionStream = crate::session::SessionStream;

    async fn session(
        &self,
        request: Request<tonic::Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Ok(Response::new(crate::session::serve(
            self.manager.clone(),
            request.into_inner(),
        )))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        if let Some(reason) = self.manager.not_ready_reason() {
            return Err(Status::unavailable(reason));
        }
        let not_running = self
            .manager
            .heartbeat(request.processing_node_id, &request.running);
        Ok(Response::new(pb::HeartbeatResponse {
            not_running,
            manager_id: self.manager.id(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.manager.status();
        Ok(Response::new(pb::StatusResponse {
            manager_id: status.manager_id,
            next_tid: status.next_tid,
            base: status.base,
            lav: status.lav,
            running: status.running,
            window: status.window,
            snapshot_bytes: status.snapshot_bytes,
            starts: status.stats.starts,
            commits: status.stats.commits,
            aborts: status.stats.aborts + status.stats.recovered_aborts,
            merges: status.stats.merges,
            publishes: status.stats.publishes,
            not_ready_reason: self.manager.not_ready_reason().unwrap_or_default(),
            managers: status
                .peers
                .iter()
                .map(|p| pb::ManagerView {
                    manager_id: p.manager_id,
                    floor: p.floor,
                    base: p.base,
                    local_lav: p.local_lav,
                    publish_seq: p.seq,
                })
                .collect(),
        }))
    }
}
