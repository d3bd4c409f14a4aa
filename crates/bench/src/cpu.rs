//! Where a case's CPU time went: this process's threads and the redis-server's, read from
//! Linux's `/proc` before and after the measured run. On a machine whose cores are all busy,
//! the CPU one operation costs in all bounds its throughput, and a thread near 100 % of a
//! core is the one that caps a path; both say why a ratio is where it is.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// Units of `/proc/<pid>/stat` CPU times: `USER_HZ`, 100 on every mainstream Linux
/// configuration (the kernel reports in it whatever its internal tick rate is).
const TICKS_PER_SEC: f64 = 100.0;
/// Threads below this share of one core are left out of the busiest-thread list.
const BUSY_SHARE_SHOWN: f64 = 0.10;

/// CPU ticks so far: per thread of this process (by thread id, with its name), and of the
/// redis-server process in all.
pub struct CpuSnapshot {
    threads: HashMap<u32, (String, u64)>,
    redis_ticks: u64,
    at: Instant,
}

/// What one run used, from two snapshots.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// CPU seconds of this process (every thread).
    pub process_secs: f64,
    /// CPU seconds of the redis-server.
    pub redis_secs: f64,
    /// Busy threads of this process, busiest first: name (with its rank among threads of
    /// the same name, in the order they were started) and share of one core.
    pub busiest: Vec<(String, f64)>,
}

impl CpuSnapshot {
    /// Now, for this process and the redis-server `redis_pid`. Threads or processes that
    /// cannot be read (ended meanwhile) count as zero.
    pub fn take(redis_pid: u32) -> CpuSnapshot {
        let mut threads = HashMap::new();
        if let Ok(tasks) = fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                if let Some((name, ticks)) = read_stat(&task.path().join("stat")) {
                    threads.insert(tid, (name, ticks));
                }
            }
        }
        let redis_ticks =
            read_stat(format!("/proc/{redis_pid}/stat").as_ref()).map_or(0, |(_, ticks)| ticks);
        CpuSnapshot {
            threads,
            redis_ticks,
            at: Instant::now(),
        }
    }

    /// What was used between `self` and `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let wall = later
            .at
            .duration_since(self.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        let mut tids: Vec<&u32> = later.threads.keys().collect();
        tids.sort();
        let mut rank_by_name: HashMap<&str, usize> = HashMap::new();
        let mut busiest = Vec::new();
        let mut process_ticks = 0;
        for tid in tids {
            let (name, ticks) = &later.threads[tid];
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            process_ticks += used;
            let rank = rank_by_name.entry(name.as_str()).or_insert(0);
            *rank += 1;
            let share = used as f64 / TICKS_PER_SEC / wall;
            if share >= BUSY_SHARE_SHOWN {
                busiest.push((format!("{name}#{rank}"), share));
            }
        }
        busiest.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            process_secs: process_ticks as f64 / TICKS_PER_SEC,
            redis_secs: later.redis_ticks.saturating_sub(self.redis_ticks) as f64 / TICKS_PER_SEC,
            busiest,
        }
    }
}

/// Name and utime + stime of one `/proc/.../stat` file.
fn read_stat(path: &std::path::Path) -> Option<(String, u64)> {
    let text = fs::read_to_string(path).ok()?;
    // `pid (name) state ...`: the name may hold spaces and parentheses, so split at the
    // last `)`; utime and stime are the 14th and 15th fields of the whole line.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_names() {
        let dir = std::env::temp_dir().join(format!("mr-bench-cpu-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stat");
        fs::write(
            &path,
            "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 5 0 0\n",
        )
        .unwrap();
        assert_eq!(read_stat(&path), Some(("a (b) c".to_owned(), 281)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_is_seen_using_cpu() {
        let before = CpuSnapshot::take(std::process::id());
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = before.until(&CpuSnapshot::take(std::process::id()));
        assert!(used.process_secs > 0.1, "{used:?}");
        assert!(
            used.redis_secs > 0.1,
            "the same process read as `redis`: {used:?}"
        );
        assert!(!used.busiest.is_empty());
    }
}
