//! A small compute pool for the engine thread: `run(n, f)` calls `f(0..n)`
//! spread over the calling thread and `threads - 1` workers.
//!
//! A decode step issues a few hundred small parallel jobs, so hand-off
//! latency matters more than anything: idle workers spin for a short while
//! (a fresh job is usually microseconds away) and then park, so a pool does
//! not burn a core that another process needs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job, set by `run` for the generation it starts.
    job: Mutex<Option<JobRef>>,
    wake: Condvar,
    generation: AtomicUsize,
    next_task: AtomicUsize,
    n_tasks: AtomicUsize,
    /// Workers that have finished the current generation.
    finished: AtomicUsize,
    shutdown: AtomicBool,
}

/// A job pointer with its lifetime erased. `run` does not return before every
/// worker has finished with it, which is what makes the erasure sound.
#[derive(Clone, Copy)]
struct JobRef(*const Job);
unsafe impl Send for JobRef {}

pub struct ComputePool {
    /// One job at a time: callers on other threads wait their turn.
    caller: Mutex<()>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ComputePool {
    pub fn new(threads: usize) -> ComputePool {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            wake: Condvar::new(),
            generation: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
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
        ComputePool { caller: Mutex::new(()), shared, workers }
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
        let s = &*self.shared;
        // SAFETY: the pointer is cleared and every worker has finished before return.
        let erased: *const Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        {
            let mut job = s.job.lock().unwrap();
            *job = Some(JobRef(erased));
            s.n_tasks.store(n_tasks, Ordering::Relaxed);
            s.next_task.store(0, Ordering::Relaxed);
            s.finished.store(0, Ordering::Relaxed);
            s.generation.fetch_add(1, Ordering::Release);
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
        *s.job.lock().unwrap() = None;
    }
}

impl ComputePool {
    /// Calls `f` on ranges that cover `0..rows`, in parallel when there are
    /// at least `min_rows` rows per range to share out.
    pub fn run_rows(&self, rows: usize, min_rows: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let tasks = (rows / min_rows.max(1)).clamp(1, 4 * self.threads());
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
            if spins % 256 == 0 && started.elapsed() >= SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let job = {
            let mut guard = s.job.lock().unwrap();
            while s.generation.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Relaxed) {
                guard = s.wake.wait(guard).unwrap();
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            seen = s.generation.load(Ordering::Acquire);
            *guard
        };
        if let Some(JobRef(f)) = job {
            // SAFETY: `run` keeps the closure alive until `finished` counts us.
            claim_tasks(s, unsafe { &*f });
        }
        s.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.job.lock().unwrap();
            self.shared.shutdown.store(true, Ordering::Relaxed);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// A pointer to an output buffer that parallel tasks write disjoint parts of.
pub struct SharedOut<T>(*mut T, usize);
impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}
unsafe impl<T: Send> Send for SharedOut<T> {}
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
