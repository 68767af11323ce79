//! The naming rules: `<svc>.<ns>.svc[.<domain>]` and `<host>.<svc>.<ns>.svc[.<domain>]`,
//! answered from a snapshot of Pods and Services.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

/// What a name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; these are its IPv4 addresses (possibly none: NOERROR, no data).
    Addresses(Vec<Ipv4Addr>),
    /// No such name (NXDOMAIN), so resolvers move on to the next search domain.
    NoSuchName,
}

/// A parsed cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterName {
    /// `<service>.<namespace>.svc`.
    Service {
        /// The Service's name.
        service: String,
        /// Its namespace.
        namespace: String,
    },
    /// `<host>.<service>.<namespace>.svc`: a pod under a headless Service.
    Pod {
        /// The pod's hostname (a StatefulSet pod's is its name).
        host: String,
        /// The governing Service (the pod's subdomain).
        service: String,
        /// The namespace.
        namespace: String,
    },
}

/// Parses `labels` (lowercase, without the root) as a cluster name under `domain` (e.g.
/// `cluster.local`); the bare `...svc` form is accepted too because the operator writes
/// addresses that way. Anything else is not a cluster name.
pub fn parse(labels: &[String], domain: &str) -> Option<ClusterName> {
    let domain: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let mut rest: Vec<&str> = labels.iter().map(String::as_str).collect();
    if rest.len() > domain.len() && rest[rest.len() - domain.len()..] == domain[..] {
        rest.truncate(rest.len() - domain.len());
    }
    match rest.as_slice() {
        [service, namespace, "svc"] => Some(ClusterName::Service {
            service: (*service).to_string(),
            namespace: (*namespace).to_string(),
        }),
        [host, service, namespace, "svc"] => Some(ClusterName::Pod {
            host: (*host).to_string(),
            service: (*service).to_string(),
            namespace: (*namespace).to_string(),
        }),
        _ => None,
    }
}

/// A pod's address if it has one and is not on its way out.
fn live_ip(pod: &Pod) -> Option<Ipv4Addr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn find_service<'a>(
    services: &'a [Arc<Service>],
    name: &str,
    namespace: &str,
) -> Option<&'a Service> {
    services.iter().map(Arc::as_ref).find(|s| {
        s.metadata.name.as_deref() == Some(name)
            && s.metadata.namespace.as_deref() == Some(namespace)
    })
}

/// Resolves `name` against `pods` and `services` the way cluster DNS does for Service and
/// pod names: a Service's name gives the addresses of the pods it selects (ready ones, or
/// all live ones when it publishes not-ready addresses); a pod name gives that pod's
/// address when the pod's hostname and subdomain match and the Service exists.
pub fn resolve(name: &ClusterName, pods: &[Arc<Pod>], services: &[Arc<Service>]) -> Answer {
    match name {
        ClusterName::Service { service, namespace } => {
            let Some(svc) = find_service(services, service, namespace) else {
                return Answer::NoSuchName;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let selector = spec.selector.unwrap_or_default();
            let not_ready_too = spec.publish_not_ready_addresses.unwrap_or(false);
            let mut ips: Vec<Ipv4Addr> = pods
                .iter()
                .map(Arc::as_ref)
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|p| selects(&selector, p))
                .filter(|p| not_ready_too || ready(p))
                .filter_map(live_ip)
                .collect();
            ips.sort();
            ips.dedup();
            Answer::Addresses(ips)
        }
        ClusterName::Pod {
            host,
            service,
            namespace,
        } => {
            if find_service(services, service, namespace).is_none() {
                return Answer::NoSuchName;
            }
            let pod = pods.iter().map(Arc::as_ref).find(|p| {
                let spec = p.spec.as_ref();
                let hostname = spec
                    .and_then(|s| s.hostname.as_deref())
                    .or(p.metadata.name.as_deref());
                p.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && hostname == Some(host.as_str())
                    && spec.and_then(|s| s.subdomain.as_deref()) == Some(service.as_str())
            });
            match pod.and_then(live_ip) {
                Some(ip) => Answer::Addresses(vec![ip]),
                None => Answer::NoSuchName,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;

    fn labels(name: &str) -> Vec<String> {
        name.split('.').map(str::to_string).collect()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, subdomain: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("ns".to_string()),
                labels: Some([("app".to_string(), "db".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                hostname: Some(name.to_string()),
                subdomain: Some(subdomain.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_string()),
                pod_ip: ip.map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_string(),
                    status: if ready { "True" } else { "False" }.to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(name: &str, headless: bool, not_ready_too: bool) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("ns".to_string()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(if headless { "None" } else { "10.96.0.9" }.to_string()),
                selector: Some([("app".to_string(), "db".to_string())].into()),
                publish_not_ready_addresses: Some(not_ready_too),
                ..Default::default()
            }),
            status: None,
        })
    }

    #[test]
    fn names_parse_with_and_without_the_cluster_domain() {
        let svc = ClusterName::Service {
            service: "db".into(),
            namespace: "ns".into(),
        };
        assert_eq!(
            parse(&labels("db.ns.svc"), "cluster.local"),
            Some(svc.clone())
        );
        assert_eq!(
            parse(&labels("db.ns.svc.cluster.local"), "cluster.local"),
            Some(svc)
        );
        assert_eq!(
            parse(&labels("db-0.h.ns.svc.cluster.local"), "cluster.local"),
            Some(ClusterName::Pod {
                host: "db-0".into(),
                service: "h".into(),
                namespace: "ns".into()
            })
        );
        // What a resolver's search list makes of `db.ns.svc` before the right try.
        assert_eq!(
            parse(&labels("db.ns.svc.ns.svc.cluster.local"), "cluster.local"),
            None
        );
        assert_eq!(parse(&labels("example.com"), "cluster.local"), None);
        assert_eq!(
            parse(&labels("ns.svc.cluster.local"), "cluster.local"),
            None
        );
    }

    #[test]
    fn a_service_resolves_to_its_ready_pods_unless_it_publishes_not_ready_ones() {
        let pods = [
            pod("db-0", Some("10.88.0.5"), true, "h"),
            pod("db-1", Some("10.88.0.6"), false, "h"),
            pod("db-2", None, false, "h"),
        ];
        let name = ClusterName::Service {
            service: "db".into(),
            namespace: "ns".into(),
        };
        assert_eq!(
            resolve(&name, &pods, &[service("db", false, false)]),
            Answer::Addresses(vec![Ipv4Addr::new(10, 88, 0, 5)])
        );
        assert_eq!(
            resolve(&name, &pods, &[service("db", true, true)]),
            Answer::Addresses(vec![
                Ipv4Addr::new(10, 88, 0, 5),
                Ipv4Addr::new(10, 88, 0, 6)
            ])
        );
        assert_eq!(resolve(&name, &pods, &[]), Answer::NoSuchName);
    }

    #[test]
    fn a_pod_name_needs_its_subdomain_service_and_an_address() {
        let mut leaving = Pod::clone(&pod("db-1", Some("10.88.0.6"), true, "h"));
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = [
            pod("db-0", Some("10.88.0.5"), false, "h"),
            Arc::new(leaving),
        ];
        let services = [service("h", true, true)];
        let name = |host: &str, svc: &str| ClusterName::Pod {
            host: host.into(),
            service: svc.into(),
            namespace: "ns".into(),
        };
        assert_eq!(
            resolve(&name("db-0", "h"), &pods, &services),
            Answer::Addresses(vec![Ipv4Addr::new(10, 88, 0, 5)])
        );
        assert_eq!(
            resolve(&name("db-1", "h"), &pods, &services),
            Answer::NoSuchName
        );
        assert_eq!(
            resolve(&name("db-0", "other"), &pods, &services),
            Answer::NoSuchName
        );
        assert_eq!(
            resolve(&name("db-9", "h"), &pods, &services),
            Answer::NoSuchName
        );
    }
}
