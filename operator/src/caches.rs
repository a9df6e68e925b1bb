//! The watches behind the operator's caches (nodes, the jobs' pods, their Services), started
//! before the leader Lease is held: a standby keeps them warm, so the replica that takes over
//! reconciles at once instead of first listing every pod of the fleet (64,000 at 1,000 jobs of
//! 64). This is controller-runtime's split too: caches run on every replica, controllers only
//! on the leader.
//!
//! A change of a pod or a Service is applied to its cache first and then, once the controller
//! runs ([`Caches::triggers`]), wakes its job. Changes before that wake nothing, and need not:
//! the controller's first list of the jobs reconciles every job, from caches that already hold
//! those changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::task::JoinHandle;
use tracing::debug;

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
}

/// What the operator's watches of its own objects select: the `elasticjob.dev/job-name` label.
pub fn owned() -> watcher::Config {
    watcher::Config::default().labels(elasticjob_crds::names::LABEL_JOB_NAME)
}

/// The caches, filled by watches that run until this is dropped.
pub struct Caches {
    /// Nodes, trimmed to their Ready condition ([`trim_node`]).
    pub nodes: Store<Node>,
    /// The jobs' pods (the `elasticjob.dev/job-name` label), indexed by job.
    pub pods: Arc<PodCache>,
    /// The jobs' Services.
    pub services: Store<Service>,
    pod_changes: Gate<Pod>,
    service_changes: Gate<Service>,
    tasks: Vec<JoinHandle<()>>,
}

impl Caches {
    /// Starts the watches (each retries with backoff on its own; nothing here fails).
    pub fn start(client: &Client, scope: &Scope, metrics: &Arc<Metrics>) -> Caches {
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

        Caches {
            nodes,
            pods,
            services,
            pod_changes,
            service_changes,
            tasks: vec![
                tokio::spawn(node_watch),
                tokio::spawn(pod_watch),
                tokio::spawn(service_watch),
            ],
        }
    }

    /// The changes of pods and of Services from now on, for the controller to map to their
    /// jobs (callable once; later calls get streams that end at once).
    pub fn triggers(
        &mut self,
    ) -> (
        impl Stream<Item = Result<Pod, watcher::Error>> + use<>,
        impl Stream<Item = Result<Service, watcher::Error>> + use<>,
    ) {
        (self.pod_changes.open(), self.service_changes.open())
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
