//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one reconciles.
//!
//! Semantics follow client-go's leaderelection: the holder renews every `retry_period`; it gives up leading
//! when no renewal succeeded within `renew_deadline`, which is shorter than `lease_duration`, so it has
//! stopped before any other replica may take the expired Lease.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use super::metrics::metrics;

/// Timing of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait after the last renewal before taking the Lease.
    pub lease_duration: Duration,
    /// The holder stops leading when it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others retry.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Rejects timings under which two replicas could lead at once.
    pub fn validate(&self) -> Result<(), LeaderError> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(LeaderError::Timing(*self));
        }
        Ok(())
    }
}

/// What to do with the Lease as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it.
    Create,
    /// Write ourselves as holder; `transition` when the holder changes.
    Take { transition: bool },
    /// Someone else holds a fresh Lease.
    Wait,
}

/// Pure decision from the observed Lease, our identity and the time.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease.map(|lease| lease.spec.clone().unwrap_or_default()) else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Take { transition: false },
        None | Some("") => Decision::Take { transition: true },
        Some(_) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
            let last = spec.renew_time.or(spec.acquire_time).map(|time| time.0);
            match last {
                Some(last) if last + duration > now => Decision::Wait,
                _ => Decision::Take { transition: true },
            }
        }
    }
}

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "leader election timing {0:?} is unsafe: it needs 0 < retry period < renew deadline < lease duration (defaults 2s < 10s < 15s)"
    )]
    Timing(Timing),
    #[error("the Lease {namespace}/{name} could not be read or written: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// One replica's handle on the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    timing: Timing,
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            timing,
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Acquires or renews the Lease; `Ok(false)` when another replica holds it or won a race for it.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let observed = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|err| self.api_error(err))?;
        let decision = decide(observed.as_ref(), &self.identity, now);
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (decision, observed) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Take { transition }, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                if transition {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions =
                        Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                // `replace` carries the observed resourceVersion: if another replica wrote in between we get 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(self.api_error(err)),
        }
    }

    /// Gives the Lease up so another replica takes over at once instead of after `lease_duration`.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|err| self.api_error(err))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(self.api_error(err)),
        }
    }

    /// Runs `work` whenever this replica leads, until `shutdown`. `work` gets a token cancelled when leadership
    /// is lost (or on shutdown) and must return promptly then; it is started again on re-election.
    pub async fn run_while_leading<F, Fut>(
        &self,
        shutdown: CancellationToken,
        mut work: F,
    ) -> Result<(), LeaderError>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.timing.validate()?;
        loop {
            if !self.wait_for_leadership(&shutdown).await {
                return Ok(());
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            metrics().leader.set(1);
            let leading = shutdown.child_token();
            let renewing = self.keep_renewing(leading.clone());
            let working = async {
                work(leading.clone()).await;
                leading.cancel();
            };
            tokio::join!(renewing, working);
            metrics().leader.set(0);
            if shutdown.is_cancelled() {
                if let Err(err) = self.release().await {
                    tracing::warn!(error = %err, "could not release the Lease; another replica takes over when it expires");
                }
                return Ok(());
            }
            tracing::warn!(lease = %self.name, "lost leadership; reconciling stopped until re-elected");
        }
    }

    /// Retries until leading (true) or shut down (false).
    async fn wait_for_leadership(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Renews every retry period; cancels `leading` when another replica took the Lease or no renewal
    /// succeeded within the renew deadline.
    async fn keep_renewing(&self, leading: CancellationToken) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = leading.cancelled() => return,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "another replica holds the Lease");
                    leading.cancel();
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not renew the Lease");
                    if last_renewed.elapsed() >= self.timing.renew_deadline {
                        leading.cancel();
                        return;
                    }
                }
            }
        }
    }
}
