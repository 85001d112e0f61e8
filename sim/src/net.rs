//! The network seam on turmoil: node listeners and connections are
//! turmoil's simulated TCP, so partitions, latency and crashes apply to them.
//! On top of that, [`MessageFaults`] decides the fate of each Raft message
//! (drop the request or the response, delay it so later ones overtake it,
//! duplicate it), at rates drawn from the seed.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_node::transport::Conn;
use shadowstore_node::transport::Incoming;
use shadowstore_node::transport::MessageFate;
use shadowstore_node::transport::Network;

/// Longest a delayed or duplicated message lags, simulated ms.
const MESSAGE_LAG_MS_MAX: u64 = 300;

/// Per-mille rates of each message fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageRates {
    pub drop_request: u32,
    pub drop_response: u32,
    pub delay: u32,
    pub duplicate: u32,
}

impl MessageRates {
    /// Half the seeds run without message faults; the others with up to 3%
    /// of requests and responses lost, 10% delayed and 3% duplicated.
    pub fn draw(rng: &mut SmallRng) -> MessageRates {
        if rng.random_bool(0.5) {
            return MessageRates::default();
        }
        MessageRates {
            drop_request: rng.random_range(0..=30),
            drop_response: rng.random_range(0..=30),
            delay: rng.random_range(0..=100),
            duplicate: rng.random_range(0..=30),
        }
    }
}

/// The message faults of one run, shared by every node's network (turmoil
/// runs hosts one at a time in a fixed order, so one generator stays
/// deterministic).
pub struct MessageFaults {
    rates: MessageRates,
    enabled: AtomicBool,
    rng: Mutex<SmallRng>,
    /// Messages dropped, delayed and duplicated so far.
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub duplicated: AtomicU64,
}

impl MessageFaults {
    pub fn new(rates: MessageRates, seed: u64) -> Arc<Self> {
        Arc::new(MessageFaults {
            rates,
            enabled: AtomicBool::new(false),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            dropped: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
        })
    }

    /// Faults apply only while enabled (the fault phase), never in setup or
    /// in the liveness phase.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    fn fate(&self) -> MessageFate {
        if !self.enabled.load(Ordering::Relaxed) || self.rates == MessageRates::default() {
            return MessageFate::Deliver;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let r = self.rates;
        let roll = rng.random_range(0..1_000u32);
        let lag = Duration::from_millis(rng.random_range(1..=MESSAGE_LAG_MS_MAX));
        let fate = if roll < r.drop_request {
            MessageFate::DropRequest
        } else if roll < r.drop_request + r.drop_response {
            MessageFate::DropResponse
        } else if roll < r.drop_request + r.drop_response + r.delay {
            MessageFate::Delay(lag)
        } else if roll < r.drop_request + r.drop_response + r.delay + r.duplicate {
            MessageFate::Duplicate(lag)
        } else {
            MessageFate::Deliver
        };
        let counter = match fate {
            MessageFate::Deliver => None,
            MessageFate::DropRequest | MessageFate::DropResponse => Some(&self.dropped),
            MessageFate::Delay(_) => Some(&self.delayed),
            MessageFate::Duplicate(_) => Some(&self.duplicated),
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        fate
    }
}

#[derive(Clone)]
pub struct TurmoilNetwork {
    pub faults: Arc<MessageFaults>,
}

impl TurmoilNetwork {
    /// Simulated TCP without message faults (for clients).
    pub fn plain() -> Self {
        TurmoilNetwork { faults: MessageFaults::new(MessageRates::default(), 0) }
    }
}

impl Network for TurmoilNetwork {
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>> {
        async move {
            let s = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Conn(Box::new(s)))
        }
        .boxed()
    }

    fn listen(&self, addr: String) -> BoxFuture<'static, io::Result<(String, Incoming)>> {
        async move {
            let l = turmoil::net::TcpListener::bind(addr.as_str()).await?;
            let bound = l.local_addr()?.to_string();
            let incoming = futures::stream::unfold(l, |l| async move {
                let next = l.accept().await.map(|(s, _)| Conn(Box::new(s)));
                Some((next, l))
            })
            .boxed();
            Ok((bound, incoming))
        }
        .boxed()
    }

    fn message_fate(&self, _addr: &str) -> MessageFate {
        self.faults.fate()
    }
}
