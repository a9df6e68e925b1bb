//! The watches behind the operator's caches (nodes, the jobs' pods, their Services, and under
//! Kueue their Workloads and the ResourceFlavors), started before the leader Lease is held: a
//! standby keeps them warm, so the replica that takes over reconciles at once instead of first
//! listing every pod of the fleet (64,000 at 1,000 jobs of 64). This is controller-runtime's
//! split too: caches run on every replica, controllers only on the leader.
//!
//! A change of a pod, a Service or a Workload is applied to its cache first and then, once the
//! controller runs ([`Caches::triggers`]), wakes its job. Changes before that wake nothing, and
//! need not: the controller's first list of the jobs reconciles every job, from caches that
//! already hold those changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::kueue;
use crate::metrics::Metrics;
use crate::pod_cache::PodCache;

/// Where the operator looks: every namespace, or one.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    /// The same for a resource known at run time (Kueue's Workloads).
    pub fn api_with(&self, client: &Client, resource: &ApiResource) -> Api<DynamicObject> {
        match self {
            Scope::All => Api::all_with(client.clone(), resource),
            Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, resource),
        }
    }
}

/// What the operator's watches of its own objects select: the `elasticjob.dev/job-name` label.
pub fn owned() -> watcher::Config {
    watcher::Config::default().labels(elasticjob_crds::names::LABEL_JOB_NAME)
}

/// Kueue's objects the reconciles read, when the cluster serves Kueue's Workload API.
#[derive(Clone)]
pub struct KueueCaches {
    /// The jobs' Workloads (the `elasticjob.dev/job-name` label), managed fields stripped.
    pub workloads: Store<DynamicObject>,
    /// Every ResourceFlavor (cluster-scoped, few): the node labels and tolerations an
    /// admission places the pods with.
    pub flavors: Store<DynamicObject>,
}

impl KueueCaches {
    /// Waits until both have their first list (each store can be waited on once: kube-runtime
    /// 5's readiness is a oneshot).
    pub async fn wait_until_ready(&self) -> bool {
        self.workloads.wait_until_ready().await.is_ok()
            && self.flavors.wait_until_ready().await.is_ok()
    }
}

/// The caches, filled by watches that run until this is dropped.
pub struct Caches {
    /// Nodes, trimmed to their Ready condition ([`trim_node`]).
    pub nodes: Store<Node>,
    /// The jobs' pods (the `elasticjob.dev/job-name` label), indexed by job.
    pub pods: Arc<PodCache>,
    /// The jobs' Services.
    pub services: Store<Service>,
    /// Kueue's Workloads and ResourceFlavors, when Kueue's Workload API is served.
    pub kueue: Option<KueueCaches>,
    pod_changes: Gate<Pod>,
    service_changes: Gate<Service>,
    workload_changes: Option<Gate<DynamicObject>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The changes that wake jobs, from [`Caches::triggers`].
pub struct Triggers {
    pub pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub services: BoxStream<'static, Result<Service, watcher::Error>>,
    /// `None` without Kueue's Workload API.
    pub workloads: Option<BoxStream<'static, Result<DynamicObject, watcher::Error>>>,
}

impl Caches {
    /// Starts the watches (each retries with backoff on its own; nothing here fails). Kueue's
    /// are started only if the cluster serves its Workload API (a watch of an API that does
    /// not exist would fail forever).
    pub async fn start(client: &Client, scope: &Scope, metrics: &Arc<Metrics>) -> Caches {
        let (nodes, node_writer) = reflector::store();
        let node_watch = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(trim_node)
            .reflect(node_writer)
            .for_each(|_| futures::future::ready(()));

        let pods = Arc::new(PodCache::default());
        let (pod_changes, pod_sender) = Gate::new(metrics.clone(), "pod");
        let pod_watch = watcher(scope.api::<Pod>(client), owned())
            .default_backoff()
            .modify(crate::pod_cache::strip)
            .for_each({
                let pods = pods.clone();
                move |event| {
                    match event {
                        Ok(event) => {
                            pods.apply(&event);
                            for pod in touched(event) {
                                pod_sender.send(pod);
                            }
                        }
                        Err(e) => debug!(error = %e, "watching the jobs' pods"),
                    }
                    futures::future::ready(())
                }
            });

        let (services, service_writer) = reflector::store();
        let (service_changes, service_sender) = Gate::new(metrics.clone(), "service");
        let service_watch = watcher(scope.api::<Service>(client), owned())
            .default_backoff()
            .modify(|s: &mut Service| s.metadata.managed_fields = None)
            .reflect(service_writer)
            .touched_objects()
            .for_each(move |service| {
                match service {
                    Ok(service) => service_sender.send(service),
                    Err(e) => debug!(error = %e, "watching the jobs' Services"),
                }
                futures::future::ready(())
            });

        let mut caches = Caches {
            nodes,
            pods,
            services,
            kueue: None,
            pod_changes,
            service_changes,
            workload_changes: None,
            tasks: vec![
                tokio::spawn(node_watch),
                tokio::spawn(pod_watch),
                tokio::spawn(service_watch),
            ],
        };
        caches.watch_kueue(client, scope, metrics).await;
        caches
    }

    /// Starts the watches of Kueue's Workloads and ResourceFlavors if they are not running
    /// and the cluster serves Kueue's Workload API now. Called at start and again when the
    /// controller starts: a standby started before Kueue was installed sees it on taking over,
    /// as a replica that starts then does.
    pub async fn watch_kueue(&mut self, client: &Client, scope: &Scope, metrics: &Arc<Metrics>) {
        if self.kueue.is_some() {
            return;
        }
        let served = serves_workloads(client).await;
        info!(
            kueue_installed = served,
            "Kueue's Workload API (kueue.x-k8s.io/v1beta2)"
        );
        if !served {
            return;
        }
        let workload_resource = kueue::workload_resource();
        let workload_writer = reflector::store::Writer::new(workload_resource.clone());
        let workloads = workload_writer.as_reader();
        let (workload_changes, workload_sender) = Gate::new(metrics.clone(), "workload");
        let workload_watch = watcher(scope.api_with(client, &workload_resource), owned())
            .default_backoff()
            .modify(|w: &mut DynamicObject| w.metadata.managed_fields = None)
            .reflect(workload_writer)
            .touched_objects()
            .for_each(move |workload| {
                match workload {
                    Ok(workload) => workload_sender.send(workload),
                    Err(e) => debug!(error = %e, "watching the jobs' Workloads"),
                }
                futures::future::ready(())
            });

        let flavor_resource = kueue::flavor_resource();
        let flavor_writer = reflector::store::Writer::new(flavor_resource.clone());
        let flavors = flavor_writer.as_reader();
        let flavor_api: Api<DynamicObject> = Api::all_with(client.clone(), &flavor_resource);
        let flavor_watch = watcher(flavor_api, watcher::Config::default())
            .default_backoff()
            .modify(|f: &mut DynamicObject| f.metadata.managed_fields = None)
            .reflect(flavor_writer)
            .for_each(|event| {
                if let Err(e) = event {
                    debug!(error = %e, "watching the ResourceFlavors");
                }
                futures::future::ready(())
            });

        self.kueue = Some(KueueCaches { workloads, flavors });
        self.workload_changes = Some(workload_changes);
        self.tasks.push(tokio::spawn(workload_watch));
        self.tasks.push(tokio::spawn(flavor_watch));
    }

    /// The changes of pods, Services and Workloads from now on, for the controller to map to
    /// their jobs (callable once; later calls get streams that end at once).
    pub fn triggers(&mut self) -> Triggers {
        Triggers {
            pods: self.pod_changes.open().boxed(),
            services: self.service_changes.open().boxed(),
            workloads: self.workload_changes.as_mut().map(|g| g.open().boxed()),
        }
    }
}

/// Whether the cluster serves Kueue's Workload API (one discovery request).
async fn serves_workloads(client: &Client) -> bool {
    match client
        .list_api_group_resources("kueue.x-k8s.io/v1beta2")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "workloads"),
        Err(e) => {
            debug!(error = %e, "Kueue's API group kueue.x-k8s.io/v1beta2 is not served");
            false
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The objects an event applies (a delete's object included), as `touched_objects` yields.
fn touched<K>(event: watcher::Event<K>) -> Vec<K> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
            vec![o]
        }
        watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
    }
}

/// Changes pass to the receiver only once it is opened; before, they are dropped.
struct Gate<K> {
    open: Arc<AtomicBool>,
    receiver: Option<mpsc::UnboundedReceiver<K>>,
}

struct GateSender<K> {
    open: Arc<AtomicBool>,
    sender: mpsc::UnboundedSender<K>,
    metrics: Arc<Metrics>,
    source: &'static str,
}

impl<K> Gate<K> {
    fn new(metrics: Arc<Metrics>, source: &'static str) -> (Gate<K>, GateSender<K>) {
        let open = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = mpsc::unbounded();
        let gate = Gate {
            open: open.clone(),
            receiver: Some(receiver),
        };
        (
            gate,
            GateSender {
                open,
                sender,
                metrics,
                source,
            },
        )
    }

    fn open(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + use<K> {
        self.open.store(true, Ordering::SeqCst);
        let receiver = self.receiver.take();
        futures::stream::iter(receiver).flatten().map(Ok)
    }
}

impl<K> GateSender<K> {
    fn send(&self, object: K) {
        if self.open.load(Ordering::SeqCst) {
            self.metrics.trigger(self.source);
            // Fails only once the controller, the receiver, is gone: nothing left to wake.
            let _ = self.sender.unbounded_send(object);
        }
    }
}

/// What the node cache keeps of a Node: its name and its Ready condition's status (the rest,
/// images and managed fields above all, is most of a Node's bytes and is never read).
pub fn trim_node(node: &mut Node) {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| NodeCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            ..NodeCondition::default()
        });
    node.metadata = ObjectMeta {
        name: node.metadata.name.take(),
        resource_version: node.metadata.resource_version.take(),
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = Some(NodeStatus {
        conditions: ready.map(|c| vec![c]),
        ..NodeStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_reach_the_controller_only_once_it_runs() {
        let metrics = Arc::new(Metrics::default());
        let (mut gate, sender) = Gate::<u32>::new(metrics, "pod");
        sender.send(1);
        let mut changes = Box::pin(gate.open());
        sender.send(2);
        sender.send(3);
        drop(sender);
        let got: Vec<u32> = changes.by_ref().map(|c| c.unwrap()).collect().await;
        assert_eq!(got, vec![2, 3]);
        let again: Vec<_> = gate.open().collect().await;
        assert!(again.is_empty());
    }
}
