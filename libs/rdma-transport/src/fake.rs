//! An in-memory RDMA fabric implementing the verbs seam, for tests on machines without RDMA
//! hardware.
//!
//! It keeps the semantics the protocol depends on: reliable, in-order delivery between two
//! connected queue pairs; a send waits (as with an infinite RNR retry count) until the peer
//! has a receive posted; a send completes only once delivered; and a peer that is gone is
//! noticed only by the next send to it, which fails as "retry exceeded" and moves the
//! sender's queue pair to the error state. It also counts doorbells and work requests so
//! tests can check that the protocol batches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::verbs::{Completion, QpConfig, QpEndpoint, QueuePair, RdmaDevice, SendWr, VerbsError};

/// A fabric of fake queue pairs; clone it to share it between the clients and nodes of one
/// test (queue pairs on different fabrics cannot connect).
#[derive(Clone)]
pub struct FakeFabric {
    inner: Arc<FabricInner>,
}

struct FabricInner {
    name: String,
    next_qpn: AtomicU32,
    qps: Mutex<HashMap<u32, Weak<FakeQp>>>,
    doorbells: AtomicU64,
    send_wrs: AtomicU64,
}

impl std::fmt::Debug for FakeFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFabric")
            .field("name", &self.inner.name)
            .field("queue_pairs", &self.inner.qps.lock().len())
            .finish()
    }
}

/// Doorbells rung and send work requests posted on a fabric so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricStats {
    /// `post_send` calls (each rings the doorbell once).
    pub doorbells: u64,
    /// Send work requests posted.
    pub send_wrs: u64,
}

impl FakeFabric {
    /// A new, empty fabric whose device is called `name`.
    pub fn new(name: &str) -> FakeFabric {
        FakeFabric {
            inner: Arc::new(FabricInner {
                name: name.to_owned(),
                next_qpn: AtomicU32::new(100),
                qps: Mutex::new(HashMap::new()),
                doorbells: AtomicU64::new(0),
                send_wrs: AtomicU64::new(0),
            }),
        }
    }

    /// Doorbells and send work requests so far.
    pub fn stats(&self) -> FabricStats {
        FabricStats {
            doorbells: self.inner.doorbells.load(Ordering::Relaxed),
            send_wrs: self.inner.send_wrs.load(Ordering::Relaxed),
        }
    }

    /// Live queue pairs on the fabric.
    pub fn live_queue_pairs(&self) -> usize {
        self.inner
            .qps
            .lock()
            .values()
            .filter(|qp| qp.upgrade().is_some_and(|qp| !qp.state.lock().destroyed))
            .count()
    }

    fn find(&self, qp_num: u32) -> Option<Arc<FakeQp>> {
        self.inner.qps.lock().get(&qp_num).and_then(Weak::upgrade)
    }
}

impl RdmaDevice for FakeFabric {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn create_qp(&self, config: QpConfig) -> Result<Box<dyn QueuePair>, VerbsError> {
        if config.slot_bytes == 0 || config.send_slots == 0 || config.recv_slots == 0 {
            return Err(VerbsError::Device(format!("unusable geometry {config:?}")));
        }
        let qp_num = self.inner.next_qpn.fetch_add(1, Ordering::Relaxed);
        let slot = || Mutex::new(vec![0u8; config.slot_bytes as usize]);
        let qp = Arc::new(FakeQp {
            fabric: self.clone(),
            qp_num,
            config,
            send_mem: (0..config.send_slots).map(|_| slot()).collect(),
            recv_mem: (0..config.recv_slots).map(|_| slot()).collect(),
            state: Mutex::new(QpState::default()),
            cv: Condvar::new(),
        });
        self.inner.qps.lock().insert(qp_num, Arc::downgrade(&qp));
        Ok(Box::new(FakeQpHandle(qp)))
    }
}

#[derive(Default)]
struct QpState {
    remote: Option<u32>,
    destroyed: bool,
    error: bool,
    posted_recv: VecDeque<u32>,
    /// Sends that arrived while no receive was posted: (sender qp, sender slot, bytes).
    inbound: VecDeque<(u32, u32, Vec<u8>)>,
    cq: VecDeque<Completion>,
    woken: bool,
}

struct FakeQp {
    fabric: FakeFabric,
    qp_num: u32,
    config: QpConfig,
    send_mem: Vec<Mutex<Vec<u8>>>,
    recv_mem: Vec<Mutex<Vec<u8>>>,
    state: Mutex<QpState>,
    cv: Condvar,
}

impl FakeQp {
    fn complete(&self, completion: Completion) {
        let mut state = self.state.lock();
        if state.destroyed {
            return;
        }
        state.cq.push_back(completion);
        self.cv.notify_all();
    }

    /// Puts `data` into receive slot `slot` and reports it.
    fn land(&self, slot: u32, data: &[u8]) {
        if let Some(mem) = self.recv_mem.get(slot as usize) {
            let mut mem = mem.lock();
            let n = data.len().min(mem.len());
            mem[..n].copy_from_slice(&data[..n]);
        }
    }
}

/// The boxed queue pair; dropping it destroys the queue pair.
struct FakeQpHandle(Arc<FakeQp>);

impl Drop for FakeQpHandle {
    fn drop(&mut self) {
        self.destroy();
    }
}

impl QueuePair for FakeQpHandle {
    fn endpoint(&self) -> QpEndpoint {
        let qp = &self.0;
        let mut gid = [0u8; 16];
        gid[12..].copy_from_slice(&qp.qp_num.to_be_bytes());
        QpEndpoint {
            qp_num: qp.qp_num,
            lid: 1,
            gid,
            psn: qp.qp_num.wrapping_mul(7919) & 0x00ff_ffff,
            slot_bytes: qp.config.slot_bytes,
            recv_slots: qp.config.recv_slots,
            device: qp.fabric.inner.name.clone(),
        }
    }

    fn connect(&self, remote: &QpEndpoint) -> Result<(), VerbsError> {
        let qp = &self.0;
        if qp.fabric.find(remote.qp_num).is_none() {
            return Err(VerbsError::Setup(format!(
                "no queue pair {} on fabric {}",
                remote.qp_num, qp.fabric.inner.name
            )));
        }
        let mut state = qp.state.lock();
        if state.destroyed {
            return Err(VerbsError::Setup("queue pair destroyed".into()));
        }
        state.remote = Some(remote.qp_num);
        Ok(())
    }

    fn config(&self) -> QpConfig {
        self.0.config
    }

    fn write_send_slot(&self, slot: u32, parts: &[&[u8]]) -> Result<u32, VerbsError> {
        let mem = self
            .0
            .send_mem
            .get(slot as usize)
            .ok_or_else(|| VerbsError::Buffer(format!("no send slot {slot}")))?;
        let mut mem = mem.lock();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > mem.len() {
            return Err(VerbsError::Buffer(format!(
                "{total} bytes do not fit a {}-byte slot",
                mem.len()
            )));
        }
        let mut at = 0;
        for part in parts {
            mem[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Ok(total as u32)
    }

    fn read_recv_slot(&self, slot: u32, len: u32, out: &mut Vec<u8>) -> Result<(), VerbsError> {
        let mem = self
            .0
            .recv_mem
            .get(slot as usize)
            .ok_or_else(|| VerbsError::Buffer(format!("no receive slot {slot}")))?;
        let mem = mem.lock();
        let bytes = mem
            .get(..len as usize)
            .ok_or_else(|| VerbsError::Buffer(format!("{len} bytes exceed the slot")))?;
        out.extend_from_slice(bytes);
        Ok(())
    }

    fn post_recv(&self, slots: &[u32]) -> Result<(), VerbsError> {
        let qp = &self.0;
        // Deliver sends that were waiting for these receives (the RNR retry succeeding).
        let mut delivered = Vec::new();
        {
            let mut state = qp.state.lock();
            if state.destroyed || state.error {
                return Err(VerbsError::Post("queue pair not usable".into()));
            }
            for &slot in slots {
                if slot >= qp.config.recv_slots {
                    return Err(VerbsError::Buffer(format!("no receive slot {slot}")));
                }
                if let Some((from, from_slot, data)) = state.inbound.pop_front() {
                    qp.land(slot, &data);
                    state.cq.push_back(Completion::Received {
                        slot,
                        len: data.len() as u32,
                    });
                    delivered.push((from, from_slot));
                } else {
                    state.posted_recv.push_back(slot);
                }
            }
            if !delivered.is_empty() {
                qp.cv.notify_all();
            }
        }
        for (from, from_slot) in delivered {
            if let Some(sender) = qp.fabric.find(from) {
                sender.complete(Completion::Sent { slot: from_slot });
            }
        }
        Ok(())
    }

    fn post_send(&self, wrs: &[SendWr]) -> Result<(), VerbsError> {
        let qp = &self.0;
        let remote = {
            let state = qp.state.lock();
            if state.destroyed || state.error {
                return Err(VerbsError::Post("queue pair in the error state".into()));
            }
            state.remote
        };
        let remote_num =
            remote.ok_or_else(|| VerbsError::Post("queue pair not connected".into()))?;
        qp.fabric.inner.doorbells.fetch_add(1, Ordering::Relaxed);
        qp.fabric
            .inner
            .send_wrs
            .fetch_add(wrs.len() as u64, Ordering::Relaxed);
        for wr in wrs {
            let data = {
                let mem = qp
                    .send_mem
                    .get(wr.slot as usize)
                    .ok_or_else(|| VerbsError::Buffer(format!("no send slot {}", wr.slot)))?;
                let mem = mem.lock();
                mem.get(..wr.len as usize)
                    .ok_or_else(|| VerbsError::Buffer(format!("{} bytes exceed the slot", wr.len)))?
                    .to_vec()
            };
            let peer = qp.fabric.find(remote_num);
            let landed = peer.and_then(|peer| {
                let mut state = peer.state.lock();
                if state.destroyed || state.error {
                    return None;
                }
                if data.len() > peer.config.slot_bytes as usize {
                    // Real hardware reports a length error at the receiver and breaks the
                    // connection; the sender's request fails as well.
                    state.error = true;
                    return None;
                }
                match state.posted_recv.pop_front() {
                    Some(slot) => {
                        peer.land(slot, &data);
                        state.cq.push_back(Completion::Received {
                            slot,
                            len: data.len() as u32,
                        });
                        peer.cv.notify_all();
                        Some(true)
                    }
                    None => {
                        state.inbound.push_back((qp.qp_num, wr.slot, data));
                        Some(false)
                    }
                }
            });
            match landed {
                Some(true) => qp.complete(Completion::Sent { slot: wr.slot }),
                Some(false) => {}
                None => {
                    let mut state = qp.state.lock();
                    state.error = true;
                    state.cq.push_back(Completion::Failed {
                        send: true,
                        slot: wr.slot,
                        status: "transport retry counter exceeded (peer gone)".into(),
                    });
                    qp.cv.notify_all();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn poll(&self, out: &mut Vec<Completion>, max: usize) -> Result<(), VerbsError> {
        let mut state = self.0.state.lock();
        for _ in 0..max {
            match state.cq.pop_front() {
                Some(c) => out.push(c),
                None => break,
            }
        }
        Ok(())
    }

    fn wait(&self, timeout: Duration) -> Result<(), VerbsError> {
        let mut state = self.0.state.lock();
        if state.cq.is_empty() && !state.woken && !state.destroyed {
            self.0.cv.wait_for(&mut state, timeout);
        }
        state.woken = false;
        Ok(())
    }

    fn wake(&self) {
        self.0.state.lock().woken = true;
        self.0.cv.notify_all();
    }

    fn destroy(&self) {
        let qp = &self.0;
        {
            let mut state = qp.state.lock();
            state.destroyed = true;
            state.posted_recv.clear();
            state.inbound.clear();
            state.cq.clear();
            qp.cv.notify_all();
        }
        qp.fabric.inner.qps.lock().remove(&qp.qp_num);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(fabric: &FakeFabric, config: QpConfig) -> (Box<dyn QueuePair>, Box<dyn QueuePair>) {
        let a = fabric.create_qp(config).expect("a");
        let b = fabric.create_qp(config).expect("b");
        a.connect(&b.endpoint()).expect("connect a");
        b.connect(&a.endpoint()).expect("connect b");
        (a, b)
    }

    fn drain(qp: &dyn QueuePair) -> Vec<Completion> {
        let mut out = Vec::new();
        qp.poll(&mut out, 100).expect("poll");
        out
    }

    #[test]
    fn a_send_waits_for_a_posted_receive_and_completes_on_delivery() {
        let fabric = FakeFabric::new("fake0");
        let config = QpConfig {
            slot_bytes: 32,
            send_slots: 2,
            recv_slots: 2,
        };
        let (a, b) = pair(&fabric, config);
        a.write_send_slot(1, &[b"hello", b" rdma"]).expect("write");
        a.post_send(&[SendWr { slot: 1, len: 10 }]).expect("post");
        // No receive posted yet: nothing completes on either side.
        assert!(drain(a.as_ref()).is_empty());
        assert!(drain(b.as_ref()).is_empty());
        b.post_recv(&[0]).expect("recv");
        assert_eq!(
            drain(b.as_ref()),
            vec![Completion::Received { slot: 0, len: 10 }]
        );
        assert_eq!(drain(a.as_ref()), vec![Completion::Sent { slot: 1 }]);
        let mut got = Vec::new();
        b.read_recv_slot(0, 10, &mut got).expect("read");
        assert_eq!(got, b"hello rdma");
        assert_eq!(
            fabric.stats(),
            FabricStats {
                doorbells: 1,
                send_wrs: 1
            }
        );
    }

    #[test]
    fn a_send_to_a_destroyed_peer_fails_and_breaks_the_queue_pair() {
        let fabric = FakeFabric::new("fake0");
        let (a, b) = pair(&fabric, QpConfig::default());
        drop(b);
        a.write_send_slot(0, &[b"x"]).expect("write");
        a.post_send(&[SendWr { slot: 0, len: 1 }]).expect("posted");
        assert!(matches!(
            drain(a.as_ref()).as_slice(),
            [Completion::Failed {
                send: true,
                slot: 0,
                ..
            }]
        ));
        assert!(a.post_send(&[SendWr { slot: 0, len: 1 }]).is_err());
        assert_eq!(fabric.live_queue_pairs(), 1);
    }

    #[test]
    fn bad_slots_and_unknown_peers_are_errors() {
        let fabric = FakeFabric::new("fake0");
        let config = QpConfig {
            slot_bytes: 8,
            send_slots: 1,
            recv_slots: 1,
        };
        let a = fabric.create_qp(config).expect("a");
        assert!(a.write_send_slot(1, &[b"x"]).is_err());
        assert!(a.write_send_slot(0, &[b"123456789"]).is_err());
        assert!(a.post_recv(&[3]).is_err());
        let mut ghost = a.endpoint();
        ghost.qp_num = 9999;
        assert!(matches!(a.connect(&ghost), Err(VerbsError::Setup(_))));
        assert!(a.post_send(&[SendWr { slot: 0, len: 1 }]).is_err());
    }
}
