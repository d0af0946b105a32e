//! Memory read bandwidth, measured in-process so that the decode bound uses the bandwidth
//! this process actually gets on this machine at this moment (a datasheet figure would
//! ignore the VM, the other builds and the thread count candle uses).

use std::hint::black_box;
use std::time::Instant;

/// A buffer far larger than any cache, so that summing it streams from DRAM.
pub struct Buffer {
    data: Vec<f32>,
}

impl Buffer {
    pub fn new(bytes: usize) -> Buffer {
        // Non-zero fill: a zeroed allocation can be backed by the shared zero page, and
        // reading it would measure the cache instead of memory.
        Buffer {
            data: vec![1.0f32; bytes / std::mem::size_of::<f32>()],
        }
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice())
    }

    /// Bytes per second reading the whole buffer on one thread.
    pub fn read_single(&self) -> f64 {
        let t0 = Instant::now();
        black_box(sum(black_box(&self.data)));
        self.bytes() as f64 / t0.elapsed().as_secs_f64()
    }

    /// Bytes per second reading the buffer split over `threads` threads, as candle splits
    /// a matmul over its thread pool.
    pub fn read_parallel(&self, threads: usize) -> f64 {
        let threads = threads.max(1);
        let chunk = self.data.len().div_ceil(threads);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .data
                .chunks(chunk)
                .map(|c| s.spawn(move || sum(black_box(c))))
                .collect();
            for h in handles {
                black_box(h.join().expect("bandwidth thread panicked"));
            }
        });
        self.bytes() as f64 / t0.elapsed().as_secs_f64()
    }
}

/// Sum with independent accumulators: a single running f32 sum is a chain of dependent
/// adds the compiler may not reorder, which would measure add latency, not memory.
fn sum(xs: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_counts_every_element() {
        let xs = vec![1.0f32; 16 * 5 + 3];
        assert_eq!(sum(&xs), 83.0);
    }
}
