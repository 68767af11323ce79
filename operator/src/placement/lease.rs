//! Leader election over a coordination.k8s.io Lease.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Result, is_conflict};

/// One Lease that at most one holder renews at a time.
///
/// Acquiring and renewing are a read followed by a write that carries the resourceVersion
/// read, so two candidates racing for an expired lease cannot both win: the API server
/// refuses the second write with 409, and that candidate stays a follower. A holder that
/// stops renewing (crashed, partitioned) loses the lease after its duration.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration_seconds: i32,
    owner: Option<OwnerReference>,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    /// A lock on Lease `name`, taken as `holder` (the operator pod's name) for
    /// `duration_seconds` per renewal.
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        holder: impl Into<String>,
        duration_seconds: i32,
        owner: Option<OwnerReference>,
    ) -> Self {
        LeaseLock {
            api,
            name: name.into(),
            holder: holder.into(),
            duration_seconds,
            owner,
        }
    }

    /// Takes or renews the lease; `Ok(true)` when this holder leads until the next renewal.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool> {
        let spec_now = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.duration_seconds),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    owner_references: self.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(spec_now(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.holder;
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let ttl = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(self.duration_seconds),
            ));
            renewed.0 + ttl < now
        });
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = lease.clone();
        next.spec = Some(spec_now(transitions, acquired));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (if held), so a successor need not wait for it to expire.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.holder.as_str());
        if !held {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
