//! The machine and the clock, for run metadata and benchmark records: CPU model, cores,
//! and UTC timestamps without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Keep freed memory in the process for the next allocation of its size (glibc only;
/// a no-op elsewhere, or where the user tuned malloc through its environment).
///
/// A forward pass allocates a fresh output for every op, many of them megabytes. glibc
/// serves those from `mmap` and returns them on free, so every op faulted in and zeroed
/// new pages: 5% of a scoring run's CPU time was in the page-fault handler. With these
/// thresholds the buffers of one layer are reused by the next, and peak memory is what
/// it was (measured: loglik 96.3 s → 90.2 s, peak RSS 1443 → 1436 MB).
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "GLIBC_TUNABLES",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if !tuned {
            // SAFETY: mallopt only sets allocator parameters; called before other threads
            // allocate (at the top of main), and both values are in range for an int.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}

/// Run candle's elementwise CPU ops on the calling thread (`CANDLE_NUM_THREADS=1`), unless
/// the user set `CANDLE_NUM_THREADS`. Call at the top of main, before any thread starts.
///
/// candle 0.11 splits every elementwise op over 64K elements across its own thread pool,
/// beside rayon's, and each of its workers then spins for about 25,000 iterations
/// waiting for the next op. On a 2-core machine that spinning took a core from the
/// rayon workers running the products and from the other task's lane (7% of a
/// RealToxicityPrompts run's CPU samples were that thread). Elementwise ops compute the
/// same values however they are split. Measured on the 2-core EPYC (`scalpel eval`,
/// eval split): RealToxicityPrompts 36 prompts × 10 samples 26.3 → 21.0 s, BBQ 120 items
/// 24.8 → 22.3 s, perplexity 60 passages 9.6 → 9.3 s, outputs byte-identical.
pub fn single_threaded_candle_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn cpu_model() -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(year, month, day, hour, minute, second)` in UTC. Hand-rolled (Hinnant's
/// days-to-civil) to keep a date crate out of the build for one timestamp.
pub fn utc(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2025-01-31T12:00:00Z`.
pub fn iso8601(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The machine in one line: CPU model, cores, OS and architecture.
pub fn describe() -> String {
    format!(
        "{}, {} cores, {}/{}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        cores(),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(iso8601(1_796_131_845), "2026-12-01T13:30:45Z");
    }
}
