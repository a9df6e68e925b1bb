//! The operator's Kubernetes client: kube's own stack with a layer that rate-limits requests
//! (a token bucket, as client-go's `--kube-api-qps` / `--kube-api-burst`) and counts them by
//! verb, resource and status class for `/metrics`.
//!
//! The limit is in `poll_ready`: kube's `Client` runs its service behind a `Buffer`, so one
//! task calls it, and a request waits there, in order, until a token is free. A watch takes a
//! token when it starts, none while it streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::{Request, Response};
use tokio::time::{Instant, Sleep};

use crate::metrics::{Metrics, RequestLabel};

/// Requests per second and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

/// A token bucket: `burst` tokens, refilled at `qps` a second.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(limit: RateLimit, now: Instant) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.qps).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.limit.qps,
            ))
        }
    }
}

/// The layer: counts every request; limits them when `limit` is set.
#[derive(Clone)]
pub struct ApiLayer {
    pub metrics: Arc<Metrics>,
    pub limit: Option<RateLimit>,
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            metrics: self.metrics.clone(),
            bucket: self
                .limit
                .filter(|l| l.qps > 0.0)
                .map(|l| Bucket::new(l, Instant::now())),
            sleep: None,
            waiting_since: None,
            reserved: false,
        }
    }
}

pub struct ApiService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    bucket: Option<Bucket>,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting_since: Option<Instant>,
    /// A token is taken for the next call.
    reserved: bool,
}

/// What a request is to the apiserver, as its audit log and `apiserver_request_total` name
/// it as far as the request shows: the verb (`WATCH` for a watch, `LIST` for a read of a
/// collection, else the HTTP method) and the resource (`pods`, `elasticjobs/status`;
/// `discovery` for a path that names none).
#[derive(Debug, PartialEq, Eq)]
struct Target {
    verb: String,
    resource: String,
}

fn target<B>(req: &Request<B>) -> Target {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    // What follows `/api/<version>` or `/apis/<group>/<version>`, without the namespace.
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => match rest {
            ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
            rest => rest,
        },
        _ => &[][..],
    };
    let (resource, collection) = match rest {
        [] => ("discovery".to_string(), false),
        [resource] => (resource.to_string(), true),
        [resource, _name] => (resource.to_string(), false),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), false),
    };
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = if watch {
        "WATCH".into()
    } else if req.method() == hyper::Method::GET && collection {
        "LIST".into()
    } else {
        req.method().as_str().to_string()
    };
    Target { verb, resource }
}

fn class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

impl<S, B, RB> tower::Service<Request<B>> for ApiService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.reserved {
            if let Some(bucket) = &mut self.bucket {
                loop {
                    if let Some(sleep) = &mut self.sleep {
                        ready!(sleep.as_mut().poll(cx));
                        self.sleep = None;
                    }
                    let now = Instant::now();
                    match bucket.take(now) {
                        Ok(()) => break,
                        Err(wait) => {
                            self.waiting_since.get_or_insert(now);
                            self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                        }
                    }
                }
                let waited = self
                    .waiting_since
                    .take()
                    .map_or(0.0, |t| t.elapsed().as_secs_f64());
                self.metrics.rate_limit_wait.observe(waited);
            }
            self.reserved = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.reserved = false;
        let Target { verb, resource } = target(&req);
        let metrics = self.metrics.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(r) => class(r.status().as_u16()),
                Err(_) => "error",
            };
            metrics
                .api_requests
                .get_or_create(&RequestLabel {
                    verb,
                    resource,
                    code,
                })
                .inc();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            RateLimit {
                qps: 10.0,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_millis(100)), Ok(()));
        // Idle time refills up to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let target = |method: &str, uri: &str| {
            let t = target(&Request::builder().method(method).uri(uri).body(()).unwrap());
            (t.verb, t.resource)
        };
        for (method, uri, verb, resource) in [
            (
                "GET",
                "/api/v1/pods?labelSelector=a&watch=true",
                "WATCH",
                "pods",
            ),
            ("GET", "/api/v1/pods?labelSelector=a", "LIST", "pods"),
            (
                "GET",
                "/apis/kueue.x-k8s.io/v1beta2/namespaces/ml/workloads?labelSelector=a",
                "LIST",
                "workloads",
            ),
            ("GET", "/api/v1/namespaces", "LIST", "namespaces"),
            ("GET", "/api/v1/namespaces/ml", "GET", "namespaces"),
            ("GET", "/api/v1/namespaces/ml/pods/p", "GET", "pods"),
            ("GET", "/api/v1/nodes/n1", "GET", "nodes"),
            ("GET", "/apis/kueue.x-k8s.io/v1beta2", "GET", "discovery"),
            ("GET", "/version", "GET", "discovery"),
            ("POST", "/api/v1/namespaces/ml/pods", "POST", "pods"),
            ("PATCH", "/api/v1/namespaces/ml/pods/p", "PATCH", "pods"),
            (
                "PATCH",
                "/apis/elasticjob.dev/v1alpha1/namespaces/ml/elasticjobs/train/status",
                "PATCH",
                "elasticjobs/status",
            ),
            (
                "POST",
                "/api/v1/namespaces/ml/pods/p/eviction",
                "POST",
                "pods/eviction",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/elasticjob-operator",
                "PUT",
                "leases",
            ),
        ] {
            assert_eq!(
                target(method, uri),
                (verb.to_string(), resource.to_string()),
                "{method} {uri}"
            );
        }
        assert_eq!(class(409), "4xx");
        assert_eq!(class(201), "2xx");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_the_rate_limit_and_are_counted() {
        use tower::{Layer, Service, ServiceExt};
        let metrics = Arc::new(Metrics::default());
        let layer = ApiLayer {
            metrics: metrics.clone(),
            limit: Some(RateLimit { qps: 2.0, burst: 1 }),
        };
        let mut svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::builder().status(404).body(()).unwrap())
        }));
        let start = Instant::now();
        for _ in 0..3 {
            let req = Request::builder().uri("/api/v1/pods/x").body(()).unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        // One at once, then one every half second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let text = metrics.encode();
        assert!(
            text.contains("elasticjob_operator_api_requests_total{verb=\"GET\",resource=\"pods\",code=\"4xx\"} 3"),
            "{text}"
        );
        assert!(text.contains("elasticjob_operator_api_rate_limit_wait_seconds_count 3"));
    }
}
