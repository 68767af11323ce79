//! The `Session` stream over the raw gRPC contract: each part of a request answered on its
//! own, refusals as clear per-request errors that leave the stream usable and the state
//! unchanged, and the stream ending when the manager stops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use shmdb_commit_manager::NoWritesRecovery;
use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use shmdb_proto::commit::session_response::Answer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// One open session: requests in, answers out, each wait bounded.
struct Session {
    requests: mpsc::Sender<pb::SessionRequest>,
    answers: tonic::Streaming<pb::SessionResponse>,
}

impl Session {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Session> {
        let mut client = CommitManagerClient::connect(format!("http://{addr}")).await?;
        let (requests, rx) = mpsc::channel(8);
        let answers = client.session(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Session { requests, answers })
    }

    async fn send(&self, id: u64, start_count: u32, commits: &[u64], aborts: &[u64]) {
        let request = pb::SessionRequest {
            id,
            processing_node_id: 7,
            start_count,
            commits: commits.to_vec(),
            aborts: aborts.to_vec(),
        };
        assert!(self.requests.send(request).await.is_ok(), "session closed");
    }

    async fn answer(&mut self) -> anyhow::Result<pb::SessionResponse> {
        let next = tokio::time::timeout(Duration::from_secs(10), self.answers.message()).await;
        next.map_err(|_| anyhow::anyhow!("no answer within 10 s"))??
            .ok_or_else(|| anyhow::anyhow!("session ended"))
    }
}

fn started(response: &pb::SessionResponse) -> &pb::StartBatchResponse {
    match &response.answer {
        Some(Answer::Started(started)) => started,
        other => panic!("expected a start answer, got {other:?}"),
    }
}

fn finished(response: &pb::SessionResponse) -> &pb::FinishBatchResponse {
    match &response.answer {
        Some(Answer::Finished(finished)) => finished,
        other => panic!("expected a finish answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_each_part_and_survives_refusals() -> anyhow::Result<()> {
    use pb::FinishOutcome as O;
    let store = common::store().await?;
    let running = common::start_manager(
        common::manager_config(1, &store),
        &store,
        Arc::new(NoWritesRecovery),
    )
    .await?;
    let mut session = Session::open(running.addr).await?;

    session.send(1, 3, &[], &[]).await;
    let first = session.answer().await?;
    assert_eq!(first.id, 1);
    let tids = started(&first).tids.clone();
    assert_eq!(tids.len(), 3);
    assert!(tids.windows(2).all(|w| w[0] < w[1]), "{tids:?}");
    assert_eq!(started(&first).manager_id, 1);

    // Starts and finishes in one request: two answers with the same id, the start at once
    // and the commit once durable.
    session.send(2, 1, &[tids[0]], &[tids[1]]).await;
    let (mut start_answer, mut finish_answer) = (None, None);
    for _ in 0..2 {
        let answer = session.answer().await?;
        assert_eq!(answer.id, 2);
        match answer.answer {
            Some(Answer::Started(_)) => start_answer = Some(answer),
            Some(Answer::Finished(_)) => finish_answer = Some(answer),
            ref other => panic!("unexpected answer {other:?}"),
        }
    }
    let fresh = started(start_answer.as_ref().expect("start answered")).tids[0];
    assert!(fresh > tids[2]);
    let outcomes = finished(finish_answer.as_ref().expect("finish answered"));
    assert_eq!(outcomes.commit_outcomes, vec![O::Ok as i32]);
    assert_eq!(outcomes.abort_outcomes, vec![O::Ok as i32]);
    assert!(!running.manager.is_running(tids[0]));

    // Refusals: per tid for finishes, per request for starts; nothing changes.
    let before = running.manager.status();
    session
        .send(3, 0, &[987_654_321, tids[0]], &[tids[1]])
        .await;
    let refused = session.answer().await?;
    assert_eq!(refused.id, 3);
    assert_eq!(
        finished(&refused).commit_outcomes,
        vec![O::UnknownTid as i32, O::AlreadyCommitted as i32]
    );
    assert_eq!(
        finished(&refused).abort_outcomes,
        vec![O::AlreadyAborted as i32]
    );
    session.send(4, 1_000_000, &[], &[]).await;
    let too_many = session.answer().await?;
    assert_eq!(too_many.id, 4);
    match &too_many.answer {
        Some(Answer::StartError(error)) => {
            assert_eq!(Code::from(error.code), Code::InvalidArgument);
            assert!(error.message.contains("1000000"), "{}", error.message);
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    let after = running.manager.status();
    assert_eq!(
        (
            after.issued,
            after.running,
            after.stats.starts,
            after.stats.commits
        ),
        (
            before.issued,
            before.running,
            before.stats.starts,
            before.stats.commits
        )
    );

    // The stream is still usable after the refusals.
    session.send(5, 0, &[tids[2], fresh], &[]).await;
    let last = session.answer().await?;
    assert_eq!(
        finished(&last).commit_outcomes,
        vec![O::Ok as i32, O::Ok as i32]
    );
    assert_eq!(running.manager.status().running, 0);

    drop(session);
    running.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_manager_ends_open_sessions() -> anyhow::Result<()> {
    let store = common::store().await?;
    let running = common::start_manager(
        common::manager_config(1, &store),
        &store,
        Arc::new(NoWritesRecovery),
    )
    .await?;
    let mut session = Session::open(running.addr).await?;
    session.send(1, 1, &[], &[]).await;
    let tid = started(&session.answer().await?).tids[0];
    assert!(running.manager.is_running(tid));
    let gauge = running.manager.metrics().sessions.clone();
    assert_eq!(gauge.get(), 1);

    // A graceful shutdown must not wait for the client to close its session.
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown waited for an open session"))?;
    let end = tokio::time::timeout(Duration::from_secs(10), session.answers.message())
        .await
        .map_err(|_| anyhow::anyhow!("the session did not end"))?;
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    common::wait_for(
        "the ended session to leave the gauge",
        Duration::from_secs(10),
        || {
            let open = gauge.get();
            async move { (open == 0).then_some(()) }
        },
    )
    .await?;
    store.cluster.shutdown().await;
    Ok(())
}
