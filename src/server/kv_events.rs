//! KV-cache events for routers that send each request to the replica whose
//! prefix cache holds its prompt (llm-d's precise prefix-cache scorer,
//! behind the Gateway API Inference Extension), in vLLM's format.
//!
//! A ZeroMQ PUB socket sends `[topic, sequence number (8 bytes,
//! big-endian, from 0), msgpack EventBatch]`, one batch for each engine step
//! that changed a prefix cache. As vLLM does, it binds an address whose host
//! is a wildcard (`tcp://*:5557`: routers dial each replica) and connects to
//! any other (`tcp://router:5557`: one router binds and every replica
//! dials it). An optional ROUTER socket replays what a
//! subscriber missed: it sends `["", first sequence number (8 bytes)]` and
//! gets `["", seq, batch]` for each batch still kept, then `["", -1, ""]`.
//!
//! The structs are msgpack arrays, as vLLM's `array_like` structs encode:
//! EventBatch `[ts, events, data_parallel_rank]`; BlockStored
//! `["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
//! lora_id, medium, lora_name]`; BlockRemoved `["BlockRemoved",
//! block_hashes, medium]`; `["AllBlocksCleared"]`. There are no adapters
//! (the lora fields are nil) and one pool, the memory the engine computes
//! from (medium is nil).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::engine::KvEventSink;
use crate::kv::KvEvent;

/// Batches waiting to be sent; beyond this many (a stalled sender) new
/// ones are dropped, as a PUB socket drops for a slow subscriber.
const QUEUE: usize = 100_000;

pub struct KvEventsConfig {
    /// Where the PUB socket binds (`tcp://*:5557`) or connects
    /// (`tcp://router:5557`).
    pub endpoint: String,
    /// Where the replay ROUTER socket binds, if anywhere.
    pub replay: Option<String>,
    /// Each model's topic: `{model}` is replaced by its name.
    pub topic: String,
    /// Batches kept for replay.
    pub buffer_steps: usize,
    /// Tokens of a KV block, sent in every BlockStored.
    pub block_size: usize,
}

/// One model's batch of events, with the topic it goes under.
type Outgoing = (Bytes, Vec<KvEvent>);

pub struct KvEventPublisher {
    queue: mpsc::Sender<Outgoing>,
    topic: String,
    dropped: Arc<AtomicU64>,
}

impl KvEventPublisher {
    /// Binds the sockets (an address that cannot be bound is an error
    /// here, before the server starts) and sends from a thread of its own,
    /// apart from the engines and the HTTP server.
    pub fn start(config: KvEventsConfig) -> Result<KvEventPublisher> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (publisher, replay) = runtime.block_on(async {
            let mut publisher = PubSocket::new();
            if let Some(at) = wildcard(&config.endpoint) {
                publisher.bind(&at).await.with_context(|| format!("--kv-events {}", config.endpoint))?;
            }
            let replay = match &config.replay {
                Some(at) => {
                    let mut router = RouterSocket::new();
                    router.bind(&bindable(at)).await.with_context(|| format!("--kv-events-replay {at}"))?;
                    Some(router)
                }
                None => None,
            };
            anyhow::Ok((publisher, replay))
        })?;
        let (queue, outgoing) = mpsc::channel(QUEUE);
        let dial = wildcard(&config.endpoint).is_none().then(|| config.endpoint.clone());
        let sender =
            Sender { publisher, dial, replay, kept: VecDeque::new(), buffer_steps: config.buffer_steps, block_size: config.block_size };
        std::thread::Builder::new().name("caravan-kv-events".into()).spawn(move || runtime.block_on(sender.run(outgoing)))?;
        Ok(KvEventPublisher { queue, topic: config.topic, dropped: Arc::new(AtomicU64::new(0)) })
    }

    /// Where `model`'s engine sends its events.
    pub fn sink(&self, model: &str) -> KvEventSink {
        let topic = Bytes::from(self.topic.replace("{model}", model));
        let (queue, dropped) = (self.queue.clone(), self.dropped.clone());
        Arc::new(move |events| {
            if queue.try_send((topic.clone(), events)).is_err() && dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("kv events: the sender is behind; batches are being dropped");
            }
        })
    }
}

/// For an address whose host is ZeroMQ's `*` (every interface) or IPv6's
/// `::`, the address to bind.
fn wildcard(endpoint: &str) -> Option<String> {
    let (scheme, port) = endpoint.rsplit_once(':')?;
    let host = scheme.split_once("://")?.1.trim_start_matches('[').trim_end_matches(']');
    match host {
        "*" => Some(endpoint.replacen("://*:", "://0.0.0.0:", 1)),
        "::" => Some(format!("tcp://[::]:{port}")),
        _ => None,
    }
}

/// The replay socket binds whatever it is given.
fn bindable(endpoint: &str) -> String {
    wildcard(endpoint).unwrap_or_else(|| endpoint.to_string())
}

struct Sender {
    publisher: PubSocket,
    /// The router to connect to, when the PUB socket does not bind.
    dial: Option<String>,
    replay: Option<RouterSocket>,
    /// The latest batches, for replay: (sequence number, payload).
    kept: VecDeque<(u64, Bytes)>,
    buffer_steps: usize,
    block_size: usize,
}

impl Sender {
    async fn run(mut self, mut outgoing: mpsc::Receiver<Outgoing>) {
        // Until the router answers, batches wait in the queue.
        if let Some(at) = self.dial.take() {
            if let Err(e) = self.publisher.connect(&at).await {
                eprintln!("kv events: connecting to {at}: {e}");
                return;
            }
        }
        let mut seq = 0u64;
        loop {
            tokio::select! {
                batch = outgoing.recv() => {
                    let Some((topic, events)) = batch else { return };
                    let payload = Bytes::from(encode_batch(now(), &events, self.block_size));
                    let frames = vec![topic, Bytes::copy_from_slice(&seq.to_be_bytes()), payload.clone()];
                    let message = ZmqMessage::try_from(frames).expect("three frames");
                    if let Err(e) = self.publisher.send(message).await {
                        eprintln!("kv events: sending batch {seq}: {e}");
                    }
                    if self.buffer_steps > 0 {
                        if self.kept.len() == self.buffer_steps {
                            self.kept.pop_front();
                        }
                        self.kept.push_back((seq, payload));
                    }
                    seq += 1;
                }
                request = next_request(&mut self.replay) => match request {
                    Ok(request) => {
                        if let Err(e) = self.answer_replay(request).await {
                            eprintln!("kv events: replay: {e}");
                        }
                    }
                    Err(e) => {
                        eprintln!("kv events: replay socket: {e}");
                        // A failing socket must not spin the thread.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    /// `[identity, "", first seq]` asks for every kept batch from `first`.
    async fn answer_replay(&mut self, request: ZmqMessage) -> Result<()> {
        let frames = request.into_vec();
        let [identity, _, first] = frames.as_slice() else {
            return Err(anyhow!("a request of {} frames (3 expected)", frames.len()));
        };
        let first = u64::from_be_bytes(first.as_ref().try_into().map_err(|_| anyhow!("the sequence number is not 8 bytes"))?);
        let router = self.replay.as_mut().expect("a request came from it");
        let answers = self.kept.iter().filter(|(seq, _)| *seq >= first).map(|(seq, payload)| (seq.to_be_bytes(), payload.clone()));
        for (seq, payload) in answers.chain(std::iter::once(((-1i64).to_be_bytes(), Bytes::new()))) {
            let frames = vec![identity.clone(), Bytes::new(), Bytes::copy_from_slice(&seq), payload];
            router.send(ZmqMessage::try_from(frames).expect("four frames")).await?;
        }
        Ok(())
    }
}

async fn next_request(replay: &mut Option<RouterSocket>) -> zeromq::ZmqResult<ZmqMessage> {
    match replay {
        Some(router) => router.recv().await,
        None => std::future::pending().await,
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One EventBatch, msgpack-encoded.
fn encode_batch(ts: f64, events: &[KvEvent], block_size: usize) -> Vec<u8> {
    use rmp::encode::{write_array_len, write_f64, write_nil, write_str, write_uint};
    // Writing to a Vec cannot fail.
    fn uints(out: &mut Vec<u8>, values: impl ExactSizeIterator<Item = u64>) {
        write_array_len(out, values.len() as u32).unwrap();
        for v in values {
            write_uint(out, v).unwrap();
        }
    }
    let mut out = Vec::new();
    write_array_len(&mut out, 3).unwrap();
    write_f64(&mut out, ts).unwrap();
    write_array_len(&mut out, events.len() as u32).unwrap();
    for event in events {
        match event {
            KvEvent::Stored { hashes, parent, tokens } => {
                write_array_len(&mut out, 8).unwrap();
                write_str(&mut out, "BlockStored").unwrap();
                uints(&mut out, hashes.iter().copied());
                match parent {
                    Some(p) => {
                        write_uint(&mut out, *p).unwrap();
                    }
                    None => write_nil(&mut out).unwrap(),
                }
                uints(&mut out, tokens.iter().map(|&t| t as u64));
                write_uint(&mut out, block_size as u64).unwrap();
                for _lora_id_medium_lora_name in 0..3 {
                    write_nil(&mut out).unwrap();
                }
            }
            KvEvent::Removed { hashes } => {
                write_array_len(&mut out, 3).unwrap();
                write_str(&mut out, "BlockRemoved").unwrap();
                uints(&mut out, hashes.iter().copied());
                write_nil(&mut out).unwrap();
            }
            KvEvent::Cleared => {
                write_array_len(&mut out, 1).unwrap();
                write_str(&mut out, "AllBlocksCleared").unwrap();
            }
        }
    }
    // The data-parallel rank: one engine per model, rank 0.
    write_uint(&mut out, 0).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_encodes_as_vllm_array_structs() {
        let events = [
            KvEvent::Stored { hashes: vec![1 << 63, 7], parent: None, tokens: vec![5, 300] },
            KvEvent::Removed { hashes: vec![7] },
            KvEvent::Cleared,
        ];
        let mut expected = vec![0x93, 0xcb];
        expected.extend(1.5f64.to_be_bytes());
        expected.push(0x93);
        // ["BlockStored", [2^63, 7], nil, [5, 300], 16, nil, nil, nil]
        expected.extend([0x98, 0xab]);
        expected.extend(b"BlockStored");
        expected.extend([0x92, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xc0, 0x92, 0x05, 0xcd, 0x01, 0x2c, 0x10, 0xc0, 0xc0, 0xc0]);
        // ["BlockRemoved", [7], nil]
        expected.extend([0x93, 0xac]);
        expected.extend(b"BlockRemoved");
        expected.extend([0x91, 0x07, 0xc0]);
        // ["AllBlocksCleared"]
        expected.extend([0x91, 0xb0]);
        expected.extend(b"AllBlocksCleared");
        expected.push(0x00);
        assert_eq!(encode_batch(1.5, &events, 16), expected);
    }

    #[test]
    fn a_wildcard_host_binds_every_interface_and_any_other_is_dialled() {
        assert_eq!(wildcard("tcp://*:5557").as_deref(), Some("tcp://0.0.0.0:5557"));
        assert_eq!(wildcard("tcp://[::]:5557").as_deref(), Some("tcp://[::]:5557"));
        assert_eq!(wildcard("tcp://127.0.0.1:5557"), None);
        assert_eq!(wildcard("tcp://router.default.svc:5557"), None);
        assert_eq!(bindable("tcp://127.0.0.1:5558"), "tcp://127.0.0.1:5558");
    }
}
