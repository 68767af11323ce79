//! The verbs seam implemented with libibverbs (through rdma-sys): reliable-connected queue
//! pairs with registered slot buffers, a completion channel for blocking waits, and the
//! INIT → RTR → RTS transitions from the peer's queue-pair number, LID and GID.
//!
//! Every verb is called through raw pointers owned by one [`IbvQp`] or [`IbvDevice`];
//! they are released in `Drop`, after the connection's threads have let go of them. Queue
//! pairs use an "infinite" receiver-not-ready retry count, which the flow control in
//! [`crate::connection`] relies on, and a transport retry budget of about half a second, so
//! a dead peer surfaces as a failed send within that time.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdma_sys::*;

use crate::device::{DeviceInfo, Discovery};
use crate::verbs::{Completion, QpConfig, QpEndpoint, QueuePair, RdmaDevice, SendWr, VerbsError};

/// The port every queue pair uses.
const PORT: u8 = 1;
/// Marks a send in a work-request id (the slot is in the low bits).
const SEND_BIT: u64 = 1 << 32;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Lists the RDMA devices libibverbs sees.
pub fn list_devices() -> Discovery {
    let mut n: c_int = 0;
    // SAFETY: ibv_get_device_list writes the count and returns a list we free below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        let e = errno();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Discovery::NoDevice(
                "no RDMA support in this kernel or container (ibv_get_device_list: ENOSYS, \
                 /sys/class/infiniband absent)"
                    .into(),
            );
        }
        return Discovery::NoDevice(format!("ibv_get_device_list failed: {e}"));
    }
    let mut devices = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: the list holds `n` valid device pointers until freed.
        let name = unsafe {
            let device = *list.add(i);
            let name = ibv_get_device_name(device);
            if name.is_null() {
                continue;
            }
            CStr::from_ptr(name).to_string_lossy().into_owned()
        };
        devices.push(DeviceInfo { name });
    }
    // SAFETY: frees the list returned above; the names were copied.
    unsafe { ibv_free_device_list(list) };
    if devices.is_empty() {
        Discovery::NoDevice(
            "libibverbs lists no RDMA device (no /dev/infiniband device in this container, or \
             no RDMA kernel driver)"
                .into(),
        )
    } else {
        Discovery::Found(devices)
    }
}

/// An opened device context and protection domain, shared by its queue pairs.
struct Context {
    name: String,
    ctx: *mut ibv_context,
    pd: *mut ibv_pd,
    lid: u16,
    gid: [u8; 16],
    gid_index: u8,
    mtu: ibv_mtu::Type,
}

// SAFETY: verbs objects may be used from any thread; the pointers are only freed in Drop.
unsafe impl Send for Context {}
// SAFETY: as above; libibverbs serialises internally where it needs to.
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every queue pair holds an Arc to this context, so none is left.
        unsafe {
            ibv_dealloc_pd(self.pd);
            ibv_close_device(self.ctx);
        }
    }
}

/// An opened RDMA device (port 1). The GID index defaults to 0 and can be set with
/// `SHMDB_RDMA_GID_INDEX` (RoCE v2 usually needs the index of the IPv4-mapped GID).
#[derive(Clone)]
pub struct IbvDevice {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for IbvDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbvDevice")
            .field("name", &self.ctx.name)
            .field("lid", &self.ctx.lid)
            .field("gid_index", &self.ctx.gid_index)
            .finish()
    }
}

impl IbvDevice {
    /// Opens the device called `name`.
    pub fn open(name: &str) -> Result<IbvDevice, VerbsError> {
        let gid_index = std::env::var("SHMDB_RDMA_GID_INDEX")
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0);
        let mut n: c_int = 0;
        // SAFETY: as in list_devices; the list is freed on every path below.
        unsafe {
            let list = ibv_get_device_list(&mut n);
            if list.is_null() {
                return Err(VerbsError::Device(format!(
                    "ibv_get_device_list: {}",
                    errno()
                )));
            }
            let mut found = std::ptr::null_mut();
            for i in 0..n.max(0) as usize {
                let device = *list.add(i);
                let dev_name = ibv_get_device_name(device);
                if !dev_name.is_null() && CStr::from_ptr(dev_name).to_string_lossy() == name {
                    found = device;
                }
            }
            if found.is_null() {
                ibv_free_device_list(list);
                return Err(VerbsError::Device(format!("no RDMA device named {name}")));
            }
            let ctx = ibv_open_device(found);
            ibv_free_device_list(list);
            if ctx.is_null() {
                return Err(VerbsError::Device(format!(
                    "ibv_open_device {name}: {}",
                    errno()
                )));
            }
            let pd = ibv_alloc_pd(ctx);
            if pd.is_null() {
                let e = errno();
                ibv_close_device(ctx);
                return Err(VerbsError::Device(format!("ibv_alloc_pd: {e}")));
            }
            let mut context = Context {
                name: name.to_owned(),
                ctx,
                pd,
                lid: 0,
                gid: [0; 16],
                gid_index,
                mtu: ibv_mtu::IBV_MTU_1024,
            };
            let mut port: ibv_port_attr = std::mem::zeroed();
            if ___ibv_query_port(ctx, PORT, &mut port) != 0 {
                return Err(VerbsError::Device(format!("ibv_query_port: {}", errno())));
            }
            let mut gid: ibv_gid = std::mem::zeroed();
            if ibv_query_gid(ctx, PORT, c_int::from(gid_index), &mut gid) != 0 {
                return Err(VerbsError::Device(format!(
                    "ibv_query_gid index {gid_index}: {}",
                    errno()
                )));
            }
            context.lid = port.lid;
            context.gid = gid.raw;
            context.mtu = port.active_mtu;
            Ok(IbvDevice {
                ctx: Arc::new(context),
            })
        }
    }
}

impl RdmaDevice for IbvDevice {
    fn name(&self) -> &str {
        &self.ctx.name
    }

    fn create_qp(&self, config: QpConfig) -> Result<Box<dyn QueuePair>, VerbsError> {
        Ok(Box::new(IbvQp::create(self.ctx.clone(), config)?))
    }
}

/// A reliable-connected queue pair with its completion queue, completion channel and
/// registered send and receive slots.
pub struct IbvQp {
    ctx: Arc<Context>,
    config: QpConfig,
    psn: u32,
    channel: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    send_buf: Vec<u8>,
    send_ptr: *mut u8,
    send_mr: *mut ibv_mr,
    recv_buf: Vec<u8>,
    recv_ptr: *mut u8,
    recv_mr: *mut ibv_mr,
    /// eventfd that interrupts a wait.
    wake_fd: c_int,
    /// Completions taken while arming the CQ, handed out by the next poll.
    stash: Mutex<Vec<Completion>>,
    unacked_events: Mutex<u32>,
    broken: AtomicBool,
}

// SAFETY: the raw pointers are verbs objects and registered buffers owned by this value;
// the protocol never writes a slot while a send from it is posted, nor reads a slot while a
// receive into it is posted, and verbs calls are thread-safe.
unsafe impl Send for IbvQp {}
// SAFETY: as above.
unsafe impl Sync for IbvQp {}

impl IbvQp {
    fn create(ctx: Arc<Context>, config: QpConfig) -> Result<IbvQp, VerbsError> {
        let slot = config.slot_bytes as usize;
        let mut send_buf = vec![0u8; slot * config.send_slots as usize];
        let mut recv_buf = vec![0u8; slot * config.recv_slots as usize];
        let send_ptr = send_buf.as_mut_ptr();
        let recv_ptr = recv_buf.as_mut_ptr();
        let psn = rand_psn();
        // SAFETY: each created object is checked and, on failure, the ones created before
        // it are released by Drop of the partially built value (null pointers are skipped).
        unsafe {
            let mut qp = IbvQp {
                ctx: ctx.clone(),
                config,
                psn,
                channel: std::ptr::null_mut(),
                cq: std::ptr::null_mut(),
                qp: std::ptr::null_mut(),
                send_buf: Vec::new(),
                send_ptr,
                send_mr: std::ptr::null_mut(),
                recv_buf: Vec::new(),
                recv_ptr,
                recv_mr: std::ptr::null_mut(),
                wake_fd: -1,
                stash: Mutex::new(Vec::new()),
                unacked_events: Mutex::new(0),
                broken: AtomicBool::new(false),
            };
            qp.wake_fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if qp.wake_fd < 0 {
                return Err(VerbsError::Device(format!("eventfd: {}", errno())));
            }
            qp.channel = ibv_create_comp_channel(ctx.ctx);
            if qp.channel.is_null() {
                return Err(VerbsError::Device(format!(
                    "ibv_create_comp_channel: {}",
                    errno()
                )));
            }
            let fd = (*qp.channel).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let depth = (config.send_slots + config.recv_slots) as c_int;
            qp.cq = ibv_create_cq(ctx.ctx, depth, std::ptr::null_mut(), qp.channel, 0);
            if qp.cq.is_null() {
                return Err(VerbsError::Device(format!("ibv_create_cq: {}", errno())));
            }
            let access = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
                | ibv_access_flags::IBV_ACCESS_REMOTE_READ)
                .0 as c_int;
            qp.send_mr = ibv_reg_mr(ctx.pd, send_ptr.cast(), send_buf.len(), access);
            if qp.send_mr.is_null() {
                return Err(VerbsError::Device(format!(
                    "ibv_reg_mr (send): {}",
                    errno()
                )));
            }
            qp.recv_mr = ibv_reg_mr(ctx.pd, recv_ptr.cast(), recv_buf.len(), access);
            if qp.recv_mr.is_null() {
                return Err(VerbsError::Device(format!(
                    "ibv_reg_mr (recv): {}",
                    errno()
                )));
            }
            qp.send_buf = std::mem::take(&mut send_buf);
            qp.recv_buf = std::mem::take(&mut recv_buf);
            let mut init: ibv_qp_init_attr = std::mem::zeroed();
            init.send_cq = qp.cq;
            init.recv_cq = qp.cq;
            init.qp_type = ibv_qp_type::IBV_QPT_RC;
            init.cap.max_send_wr = config.send_slots;
            init.cap.max_recv_wr = config.recv_slots;
            init.cap.max_send_sge = 1;
            init.cap.max_recv_sge = 1;
            qp.qp = ibv_create_qp(ctx.pd, &mut init);
            if qp.qp.is_null() {
                return Err(VerbsError::Device(format!("ibv_create_qp: {}", errno())));
            }
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
            attr.pkey_index = 0;
            attr.port_num = PORT;
            attr.qp_access_flags = access as u32;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
            if ibv_modify_qp(qp.qp, &mut attr, mask.0 as c_int) != 0 {
                return Err(VerbsError::Setup(format!("to INIT: {}", errno())));
            }
            Ok(qp)
        }
    }

    fn slot_ptr(&self, base: *mut u8, slots: u32, slot: u32) -> Result<*mut u8, VerbsError> {
        if slot >= slots {
            return Err(VerbsError::Buffer(format!("no slot {slot}")));
        }
        // SAFETY: slot < slots, so the offset stays inside the registered buffer.
        Ok(unsafe { base.add(slot as usize * self.config.slot_bytes as usize) })
    }

    fn convert(&self, wc: &ibv_wc) -> Completion {
        let send = wc.wr_id & SEND_BIT != 0;
        let slot = (wc.wr_id & 0xffff_ffff) as u32;
        if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
            // SAFETY: ibv_wc_status_str returns a static string for any status.
            let text = unsafe {
                let s = ibv_wc_status_str(wc.status);
                if s.is_null() {
                    format!("status {}", wc.status)
                } else {
                    CStr::from_ptr(s).to_string_lossy().into_owned()
                }
            };
            return Completion::Failed {
                send,
                slot,
                status: text,
            };
        }
        if send {
            Completion::Sent { slot }
        } else {
            Completion::Received {
                slot,
                len: wc.byte_len,
            }
        }
    }

    fn poll_cq(&self, out: &mut Vec<Completion>, max: usize) -> Result<(), VerbsError> {
        let mut wcs: Vec<ibv_wc> = Vec::with_capacity(max);
        // SAFETY: ibv_wc is plain data; ibv_poll_cq fills at most `max` entries.
        unsafe {
            wcs.resize_with(max, || std::mem::zeroed());
            let n = ibv_poll_cq(self.cq, max as c_int, wcs.as_mut_ptr());
            if n < 0 {
                return Err(VerbsError::Completion(format!("ibv_poll_cq: {n}")));
            }
            for wc in &wcs[..n as usize] {
                out.push(self.convert(wc));
            }
        }
        Ok(())
    }
}

impl QueuePair for IbvQp {
    fn endpoint(&self) -> QpEndpoint {
        QpEndpoint {
            // SAFETY: qp is valid for our lifetime.
            qp_num: unsafe { (*self.qp).qp_num },
            lid: self.ctx.lid,
            gid: self.ctx.gid,
            psn: self.psn,
            slot_bytes: self.config.slot_bytes,
            recv_slots: self.config.recv_slots,
            device: self.ctx.name.clone(),
        }
    }

    fn connect(&self, remote: &QpEndpoint) -> Result<(), VerbsError> {
        // SAFETY: plain attribute structs passed to ibv_modify_qp on our valid qp.
        unsafe {
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_RTR;
            attr.path_mtu = self.ctx.mtu;
            attr.dest_qp_num = remote.qp_num;
            attr.rq_psn = remote.psn;
            attr.max_dest_rd_atomic = 1;
            attr.min_rnr_timer = 12;
            attr.ah_attr.dlid = remote.lid;
            attr.ah_attr.sl = 0;
            attr.ah_attr.src_path_bits = 0;
            attr.ah_attr.port_num = PORT;
            if remote.gid != [0; 16] {
                attr.ah_attr.is_global = 1;
                attr.ah_attr.grh.dgid.raw = remote.gid;
                attr.ah_attr.grh.sgid_index = self.ctx.gid_index;
                attr.ah_attr.grh.hop_limit = 1;
            }
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
            if ibv_modify_qp(self.qp, &mut attr, mask.0 as c_int) != 0 {
                return Err(VerbsError::Setup(format!("to RTR: {}", errno())));
            }
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
            // 4.096 µs × 2^14 ≈ 67 ms per try, 7 tries: a dead peer fails a send in ~0.5 s.
            attr.timeout = 14;
            attr.retry_cnt = 7;
            // 7 = retry forever while the peer has no receive posted (flow control).
            attr.rnr_retry = 7;
            attr.sq_psn = self.psn;
            attr.max_rd_atomic = 1;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
            if ibv_modify_qp(self.qp, &mut attr, mask.0 as c_int) != 0 {
                return Err(VerbsError::Setup(format!("to RTS: {}", errno())));
            }
        }
        Ok(())
    }

    fn config(&self) -> QpConfig {
        self.config
    }

    fn write_send_slot(&self, slot: u32, parts: &[&[u8]]) -> Result<u32, VerbsError> {
        let base = self.slot_ptr(self.send_ptr, self.config.send_slots, slot)?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.config.slot_bytes as usize {
            return Err(VerbsError::Buffer(format!(
                "{total} bytes do not fit a {}-byte slot",
                self.config.slot_bytes
            )));
        }
        let mut at = 0;
        for part in parts {
            // SAFETY: the slot has room for `total` bytes and no send from it is posted.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), base.add(at), part.len()) };
            at += part.len();
        }
        Ok(total as u32)
    }

    fn read_recv_slot(&self, slot: u32, len: u32, out: &mut Vec<u8>) -> Result<(), VerbsError> {
        let base = self.slot_ptr(self.recv_ptr, self.config.recv_slots, slot)?;
        if len > self.config.slot_bytes {
            return Err(VerbsError::Buffer(format!("{len} bytes exceed the slot")));
        }
        // SAFETY: the receive into this slot completed and it is not reposted yet.
        let bytes = unsafe { std::slice::from_raw_parts(base, len as usize) };
        out.extend_from_slice(bytes);
        Ok(())
    }

    fn post_recv(&self, slots: &[u32]) -> Result<(), VerbsError> {
        if slots.is_empty() {
            return Ok(());
        }
        // SAFETY: the sge and wr arrays outlive the call; lkey belongs to the recv MR.
        unsafe {
            let lkey = (*self.recv_mr).lkey;
            let mut sges = Vec::with_capacity(slots.len());
            for &slot in slots {
                let addr = self.slot_ptr(self.recv_ptr, self.config.recv_slots, slot)?;
                sges.push(ibv_sge {
                    addr: addr as u64,
                    length: self.config.slot_bytes,
                    lkey,
                });
            }
            let mut wrs: Vec<ibv_recv_wr> = slots
                .iter()
                .map(|&slot| ibv_recv_wr {
                    wr_id: u64::from(slot),
                    next: std::ptr::null_mut(),
                    sg_list: std::ptr::null_mut(),
                    num_sge: 1,
                })
                .collect();
            for i in 0..wrs.len() {
                wrs[i].sg_list = &mut sges[i];
                if i + 1 < wrs.len() {
                    wrs[i].next = wrs.as_mut_ptr().add(i + 1);
                }
            }
            let mut bad = std::ptr::null_mut();
            let rc = ibv_post_recv(self.qp, wrs.as_mut_ptr(), &mut bad);
            if rc != 0 {
                return Err(VerbsError::Post(format!("ibv_post_recv: error {rc}")));
            }
        }
        Ok(())
    }

    fn post_send(&self, wrs: &[SendWr]) -> Result<(), VerbsError> {
        if wrs.is_empty() {
            return Ok(());
        }
        // SAFETY: as in post_recv; every send is signalled so its slot is freed on
        // completion, and the whole chain goes to the NIC with one doorbell.
        unsafe {
            let lkey = (*self.send_mr).lkey;
            let mut sges = Vec::with_capacity(wrs.len());
            for wr in wrs {
                let addr = self.slot_ptr(self.send_ptr, self.config.send_slots, wr.slot)?;
                sges.push(ibv_sge {
                    addr: addr as u64,
                    length: wr.len,
                    lkey,
                });
            }
            let mut chain: Vec<ibv_send_wr> = Vec::with_capacity(wrs.len());
            for wr in wrs {
                let mut w: ibv_send_wr = std::mem::zeroed();
                w.wr_id = SEND_BIT | u64::from(wr.slot);
                w.opcode = ibv_wr_opcode::IBV_WR_SEND;
                w.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
                w.num_sge = 1;
                chain.push(w);
            }
            for i in 0..chain.len() {
                chain[i].sg_list = &mut sges[i];
                if i + 1 < chain.len() {
                    chain[i].next = chain.as_mut_ptr().add(i + 1);
                }
            }
            let mut bad = std::ptr::null_mut();
            let rc = ibv_post_send(self.qp, chain.as_mut_ptr(), &mut bad);
            if rc != 0 {
                self.broken.store(true, Ordering::Release);
                return Err(VerbsError::Post(format!("ibv_post_send: error {rc}")));
            }
        }
        Ok(())
    }

    fn poll(&self, out: &mut Vec<Completion>, max: usize) -> Result<(), VerbsError> {
        let mut stash = self.stash.lock();
        let take = stash.len().min(max);
        out.extend(stash.drain(..take));
        drop(stash);
        if out.len() < max {
            self.poll_cq(out, max - out.len())?;
        }
        Ok(())
    }

    fn wait(&self, timeout: Duration) -> Result<(), VerbsError> {
        // SAFETY: cq, channel and wake_fd are valid; pollfd array outlives the call.
        unsafe {
            if ibv_req_notify_cq(self.cq, 0) != 0 {
                return Err(VerbsError::Completion(format!(
                    "ibv_req_notify_cq: {}",
                    errno()
                )));
            }
            // A completion that arrived before arming raises no event: look once more.
            let mut early = Vec::new();
            self.poll_cq(&mut early, 16)?;
            if !early.is_empty() {
                self.stash.lock().extend(early);
                return Ok(());
            }
            let mut fds = [
                libc::pollfd {
                    fd: (*self.channel).fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
            let rc = libc::poll(fds.as_mut_ptr(), 2, ms);
            if rc < 0 {
                let e = errno();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    return Ok(());
                }
                return Err(VerbsError::Completion(format!("poll: {e}")));
            }
            if fds[0].revents & libc::POLLIN != 0 {
                let mut cq = std::ptr::null_mut();
                let mut cq_ctx = std::ptr::null_mut();
                if ibv_get_cq_event(self.channel, &mut cq, &mut cq_ctx) == 0 {
                    *self.unacked_events.lock() += 1;
                }
            }
            if fds[1].revents & libc::POLLIN != 0 {
                let mut value = 0u64;
                libc::read(self.wake_fd, (&mut value as *mut u64).cast(), 8);
            }
        }
        Ok(())
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes to our eventfd.
        unsafe { libc::write(self.wake_fd, (&one as *const u64).cast(), 8) };
    }

    fn destroy(&self) {
        // Moving to the error state makes the queue pair drop everything, as a crashed
        // process's would; the resources themselves are freed when the last user is gone.
        // SAFETY: plain attribute struct on our valid qp.
        unsafe {
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
            ibv_modify_qp(
                self.qp,
                &mut attr,
                ibv_qp_attr_mask::IBV_QP_STATE.0 as c_int,
            );
        }
        self.broken.store(true, Ordering::Release);
        self.wake();
    }
}

impl Drop for IbvQp {
    fn drop(&mut self) {
        // SAFETY: nobody else holds this queue pair any more; each pointer is released at
        // most once, in reverse order of creation, skipping the ones never created.
        unsafe {
            if !self.qp.is_null() {
                ibv_destroy_qp(self.qp);
            }
            if !self.cq.is_null() {
                let events = *self.unacked_events.lock();
                if events > 0 {
                    ibv_ack_cq_events(self.cq, events);
                }
                ibv_destroy_cq(self.cq);
            }
            if !self.send_mr.is_null() {
                ibv_dereg_mr(self.send_mr);
            }
            if !self.recv_mr.is_null() {
                ibv_dereg_mr(self.recv_mr);
            }
            if !self.channel.is_null() {
                ibv_destroy_comp_channel(self.channel);
            }
            if self.wake_fd >= 0 {
                libc::close(self.wake_fd);
            }
        }
        // The registered buffers are freed after deregistration.
        self.send_buf.clear();
        self.recv_buf.clear();
    }
}

/// A 24-bit starting packet sequence number, different per queue pair.
fn rand_psn() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() & 0x00ff_ffff) as u32
}
