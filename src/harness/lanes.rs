//! Running a suite's tasks side by side: up to one lane per core, each lane taking the
//! next task in suite order when its last one is done, all lanes on the one thread pool.
//!
//! Why: a forward pass of a small model does not keep two cores busy. On the 2-core
//! machine the main job is gated on, one task at 2 threads ran only 1.5–1.6× faster than
//! at 1 thread (`scalpel eval`: BBQ 22.5 → 14.9 s, BoolQ 26.3 → 16.4 s), so two tasks
//! side by side get more done: BBQ and BoolQ together 37.9 s in one lane, 30.7 s in two.
//! Tasks are independent; the cases of one task share a prefix memo (the unmodified case
//! records what the others start from), so they stay in one lane, in order.
//!
//! Why one pool and not a pool per lane: a product splits its output columns into one
//! block per thread of the pool it runs in, and a block's width can change the order a
//! kernel sums in. In pools of one thread each the same case scored different last bits
//! (CrowS-Pairs' likelihood gaps by up to 4e-4 nats, and 23–40 of each case's 100
//! RealToxicityPrompts maxima through flipped samples). In the shared pool every product
//! splits as it does without lanes, so lanes change how long a run takes, never what it
//! computes; and when one lane runs out of tasks, its thread steals the other lanes'
//! blocks instead of idling.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use super::run::{HarnessError, RunProgress};

/// How many lanes: `requested` (the CLI's `--test-threads`), by default one per thread
/// of the pool (`cores`), never more than there are tasks or threads (a lane beyond the
/// threads would wait for one, and a thread waiting inside a product could take it up
/// and hold its own lane for a whole task). On a GPU one lane: the device is the
/// bottleneck, and candle's CUDA streams are per device, not per lane.
pub fn lanes(requested: Option<usize>, tasks: usize, cores: usize, on_cpu: bool) -> usize {
    if !on_cpu {
        return 1;
    }
    requested.unwrap_or(cores).min(cores).min(tasks).max(1)
}

/// `work(i, progress)` for every `i < n`, results in index order. With one lane they run
/// here, in order; with more, each lane is a job of rayon's pool that takes the next
/// index when it is free, and progress reaches `progress` on this thread. The first error (by
/// index, so the same one whatever the timing) is returned once every lane has stopped;
/// after an error no lane starts another task.
pub fn run_all<T: Send>(
    lanes: usize,
    n: usize,
    work: impl Fn(usize, &mut dyn FnMut(RunProgress)) -> Result<T, HarnessError> + Sync,
    progress: &mut dyn FnMut(RunProgress),
) -> Result<Vec<T>, HarnessError> {
    if lanes <= 1 || n <= 1 {
        return (0..n).map(|i| work(i, progress)).collect();
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<T, HarnessError>>>> =
        Mutex::new((0..n).map(|_| None).collect());
    let (tx, rx) = mpsc::channel::<RunProgress>();
    let lane = |tx: mpsc::Sender<RunProgress>| loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= n {
            break;
        }
        let mut send = |p: RunProgress| {
            let _ = tx.send(p);
        };
        let r = work(i, &mut send);
        if r.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
    };
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..lanes).map(|_| tx.clone()).collect();
        drop(tx);
        // The lanes are jobs of the pool; this thread relays their progress meanwhile,
        // until every lane has finished and dropped its sender.
        s.spawn(|| {
            rayon::scope(|rs| {
                for tx in senders {
                    let lane = &lane;
                    rs.spawn(move |_| lane(tx));
                }
            })
        });
        for p in rx {
            progress(p);
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(n);
    for r in results {
        match r {
            Some(Ok(t)) => out.push(t),
            Some(Err(e)) => return Err(e),
            // Not started: an earlier error stopped the lanes, and it comes first.
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lane_per_core_but_no_more_than_tasks() {
        assert_eq!(lanes(None, 8, 2, true), 2);
        assert_eq!(lanes(None, 8, 16, true), 8);
        assert_eq!(lanes(None, 3, 16, true), 3);
        assert_eq!(lanes(Some(1), 8, 2, true), 1);
        assert_eq!(lanes(Some(4), 8, 2, true), 2);
        assert_eq!(lanes(None, 1, 2, true), 1);
        assert_eq!(lanes(None, 0, 2, true), 1);
        assert_eq!(lanes(None, 8, 2, false), 1);
    }

    #[test]
    fn lanes_return_every_result_in_index_order_and_forward_progress() {
        let mut seen = 0;
        let out = run_all(
            2,
            7,
            |i, p| {
                p(RunProgress::Fitting {
                    intervention: i.to_string(),
                });
                // Uneven work, so lanes finish out of order.
                std::thread::sleep(std::time::Duration::from_millis((7 - i as u64) * 5));
                Ok(i)
            },
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!(out, (0..7).collect::<Vec<_>>());
        assert_eq!(seen, 7);
    }

    #[test]
    fn the_first_failing_task_by_index_is_the_error() {
        let err = run_all(
            2,
            6,
            |i, _| {
                if i == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                if i == 1 || i == 2 {
                    return Err(HarnessError::Merge {
                        message: format!("task {i}"),
                    });
                }
                Ok(i)
            },
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "merge: task 1");
    }
}
