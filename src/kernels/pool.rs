//! A small compute pool for the engine thread: `run(n, f)` calls `f(0..n)`
//! spread over the calling thread and `threads - 1` workers.
//!
//! A decode step issues a few hundred small parallel jobs, so hand-off
//! latency matters more than anything: idle workers spin for a short while
//! (a fresh job is usually microseconds away) and then park, so a pool does
//! not burn a core that another process needs.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// Fewest rows a `run_rows` task takes. A row-wise op (RMSNorm, RoPE,
/// SiLU, activation quantization) costs 0.5-1.5 us a row and a hand-off
/// under 1 us, so four rows are worth sharing: with sixteen, a batched
/// decode step of 16 sequences ran each of these ops on one core, and the
/// other idled for 6% of the samples of a profile (2.6% with four).
const ROWS_PER_TASK: usize = 4;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job: a pointer to `run`'s reference to its closure, set
    /// before the generation that starts it is published (and read after
    /// a worker sees that generation), so taking a job needs no lock. `run`
    /// does not return before every worker has finished with it, which is
    /// what makes erasing the closure's lifetime sound.
    job: AtomicPtr<&'static Job>,
    generation: AtomicUsize,
    next_task: AtomicUsize,
    n_tasks: AtomicUsize,
    /// Workers that have finished the current generation.
    finished: AtomicUsize,
    /// Workers parked (or about to park) on `wake`: `run` takes the lock
    /// and wakes them only when there are any, since a wake is a system
    /// call even with no one waiting.
    parked: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

pub struct ComputePool {
    /// One job at a time: callers on other threads wait their turn.
    caller: Mutex<()>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// `run_streams`' runs, one per thread, set up by the job that uses them.
    streams: Box<[Stream]>,
}

/// What is left of one thread's run of items: `front..back`, packed in one
/// word (front in the low half) so that either end is claimed atomically.
/// A cache line each: a run's owner claims from it alone until it is done.
#[repr(align(64))]
struct Stream(AtomicU64);

impl Stream {
    fn packed(range: std::ops::Range<usize>) -> u64 {
        (range.end as u64) << 32 | range.start as u64
    }

    fn set(&self, range: std::ops::Range<usize>) {
        self.0.store(Self::packed(range), Ordering::Relaxed);
    }

    /// Up to `step` items from the front (`back: false`) or the back.
    fn claim(&self, step: usize, back: bool) -> Option<std::ops::Range<usize>> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (front, end) = ((cur & 0xFFFF_FFFF) as usize, (cur >> 32) as usize);
            if front >= end {
                return None;
            }
            let (claimed, left) = if back {
                let from = end.saturating_sub(step).max(front);
                (from..end, front..from)
            } else {
                let to = (front + step).min(end);
                (front..to, to..end)
            };
            match self.0.compare_exchange_weak(cur, Self::packed(left), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(claimed),
                Err(seen) => cur = seen,
            }
        }
    }
}

impl ComputePool {
    pub fn new(threads: usize) -> ComputePool {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("caravan-compute-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawn compute worker")
            })
            .collect();
        let streams = (0..threads.max(1)).map(|_| Stream(AtomicU64::new(0))).collect();
        ComputePool { caller: Mutex::new(()), shared, workers, streams }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n_tasks`, in parallel, and returns
    /// when all calls are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _turn = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        self.run_turn(n_tasks, f);
    }

    /// `run` for a caller that holds the turn.
    fn run_turn(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        // SAFETY: see `Shared::job`; the pointer is cleared below.
        let mut erased: &'static Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        s.job.store(&mut erased, Ordering::Relaxed);
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        // Publishes the stores above. Sequentially consistent with the
        // `parked` count: a worker counted before this load is woken, one
        // counted after it sees this generation before it waits.
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        claim_tasks(s, f);
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < self.workers.len() {
            spins += 1;
            if spins < 10_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

impl ComputePool {
    /// Calls `f` on ranges that cover `0..items`, at most `step` items
    /// each: every thread walks a contiguous run of its own front to back,
    /// then takes steps from the back of the runs not yet done. Each
    /// thread's reads stay one sequential stream (a decode step's weights,
    /// prefetched ahead of the kernel: every start of a new stretch waits
    /// on memory), and a thread that starts late or runs slow has its run
    /// shared out instead of waited for.
    pub fn run_streams(&self, items: usize, step: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let threads = self.threads();
        if threads == 1 || items <= step {
            return f(0..items);
        }
        assert!(items < 1 << 32, "run_streams packs item indices in 32 bits");
        let _turn = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        for (t, stream) in self.streams.iter().enumerate() {
            stream.set(t * items / threads..(t + 1) * items / threads);
        }
        let step = step.max(1);
        self.run_turn(threads, &|t| {
            while let Some(range) = self.streams[t].claim(step, false) {
                f(range);
            }
            for other in (1..threads).map(|d| &self.streams[(t + d) % threads]) {
                while let Some(range) = other.claim(step, true) {
                    f(range);
                }
            }
        });
    }

    /// Calls `f` on ranges that cover `0..rows`, in parallel when there are
    /// at least `ROWS_PER_TASK` rows per range to share out.
    pub fn run_rows(&self, rows: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let tasks = (rows / ROWS_PER_TASK).clamp(1, 4 * self.threads());
        let per = rows.div_ceil(tasks);
        self.run(tasks, &|t| {
            let range = t * per..((t + 1) * per).min(rows);
            if !range.is_empty() {
                f(range)
            }
        });
    }
}

fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync + '_)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker_loop(s: &Shared) {
    let mut seen = 0usize;
    loop {
        // Spin for a fresh generation, then park on the condvar.
        // Reading the clock costs more than a spin: look at it now and then.
        let started = Instant::now();
        let mut spins = 0u32;
        while s.generation.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && started.elapsed() >= SPIN {
                park(s, seen);
                break;
            }
            std::hint::spin_loop();
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = s.generation.load(Ordering::Acquire);
        // SAFETY: `run` set the job before publishing this generation and
        // keeps it alive until `finished` counts us.
        claim_tasks(s, unsafe { *s.job.load(Ordering::Relaxed) });
        s.finished.fetch_add(1, Ordering::Release);
    }
}

/// Waits on the condvar for a generation after `seen` (or shutdown).
fn park(s: &Shared, seen: usize) {
    let mut guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
    s.parked.fetch_add(1, Ordering::SeqCst);
    while s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::Acquire) {
        guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
    s.parked.fetch_sub(1, Ordering::SeqCst);
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
            // A spinning worker sees a new generation, a parked one is woken.
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A pointer to an output buffer that parallel tasks write disjoint parts of.
pub struct SharedOut<T>(*mut T, usize);
impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}
// SAFETY: a SharedOut is a `&mut [T]` split among threads: sending it
// sends access to `T`s, hence `T: Send`. Sharing it lets several threads
// reach the buffer at once, which is sound because the only access is
// through the `unsafe` `slice` and `rows`, whose callers promise disjoint
// elements and a buffer that outlives them (the pool's `run` returns only
// when every task has finished); no two threads ever touch one `T`, so
// `T: Sync` is not needed.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as for Send, above.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub fn new(out: &mut [T]) -> SharedOut<T> {
        SharedOut(out.as_mut_ptr(), out.len())
    }

    /// The whole buffer.
    ///
    /// # Safety
    /// The buffer must outlive the use, and concurrent callers must write
    /// disjoint elements only.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0, self.1)
    }

    /// Rows `rows` of a buffer of rows of `width` elements.
    ///
    /// # Safety
    /// As for `slice`: concurrent callers must ask for disjoint rows.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn rows(&self, rows: std::ops::Range<usize>, width: usize) -> &mut [T] {
        &mut self.slice()[rows.start * width..rows.end * width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_worker_wakes_for_the_next_job() {
        let pool = ComputePool::new(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..5 {
            // Idle past the spin: the worker parks.
            while pool.shared.parked.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "the idle worker never parked");
                std::thread::sleep(Duration::from_millis(1));
            }
            // Each task waits for the other: done only when the parked
            // worker has woken and taken one.
            let arrived = AtomicUsize::new(0);
            pool.run(2, &|_| {
                arrived.fetch_add(1, Ordering::SeqCst);
                while arrived.load(Ordering::SeqCst) < 2 {
                    assert!(Instant::now() < deadline, "the parked worker was not woken");
                    std::hint::spin_loop();
                }
            });
        }
    }

    #[test]
    fn concurrent_callers_each_get_their_whole_job() {
        let pool = Arc::new(ComputePool::new(2));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        let hits: Vec<AtomicUsize> = (0..16).map(|_| AtomicUsize::new(0)).collect();
                        pool.run(16, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                })
            })
            .collect();
        callers.into_iter().for_each(|c| c.join().unwrap());
    }

    #[test]
    fn streams_cover_every_item_exactly_once_when_a_thread_lags() {
        let pool = ComputePool::new(3);
        for (items, step) in [(1usize, 1usize), (2, 1), (7, 2), (36, 1), (100, 3), (1000, 1)] {
            for round in 0..50 {
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                // Counted, not asserted inside: a panic on a worker would hang the job.
                let misshapen = AtomicUsize::new(0);
                pool.run_streams(items, step, &|range| {
                    if range.is_empty() || range.len() > step {
                        misshapen.fetch_add(1, Ordering::Relaxed);
                    }
                    // One run's owner is slow: the others take its steps.
                    if range.start < items / 3 && round % 2 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    for i in range {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert_eq!(misshapen.load(Ordering::Relaxed), 0, "ranges empty or over {step} items");
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{items} items, step {step}");
            }
        }
    }

    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        let pool = ComputePool::new(3);
        for n in [0usize, 1, 2, 7, 64] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }
}
