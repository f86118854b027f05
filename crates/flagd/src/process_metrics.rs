//! The standard `process_*` metrics of Prometheus' client libraries (CPU time, memory, file
//! descriptors, threads, start time), read from `/proc/self` at each scrape, and
//! `flagd_build_info`. Both are registered with every server's metrics, whatever its mode.
//!
//! Outside Linux there is no `/proc`, and only `flagd_build_info` is written.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc`'s CPU times: `USER_HZ`, which Linux fixes at 100 in its
/// user-space interface whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// Writes the process's numbers and the build's at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The process's numbers, as `/proc/self` gives them; each is `None` where it could not be
/// read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads them now.
    #[cfg(target_os = "linux")]
    pub(crate) fn read() -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat");
        let status = read("/proc/self/status");
        let fields = stat.as_deref().and_then(stat_fields);
        let field = |n: usize| fields.as_ref().and_then(|f| f.get(n)?.parse::<u64>().ok());
        // Fields counted from `state` (the third in the file, after `pid` and `(comm)`):
        // utime 14, stime 15, starttime 22, each less 3.
        let cpu_seconds = match (field(14 - 3), field(15 - 3)) {
            (Some(user), Some(system)) => Some((user + system) as f64 / USER_HZ),
            _ => None,
        };
        let boot_time = read("/proc/stat").and_then(|s| {
            s.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let start_time_seconds = match (boot_time, field(22 - 3)) {
            (Some(boot), Some(ticks)) => Some(boot as f64 + ticks as f64 / USER_HZ),
            _ => None,
        };
        let kib = |name: &str| {
            status
                .as_deref()
                .and_then(|s| status_value(s, name))
                .map(|v| v * 1024)
        };
        ProcessStats {
            cpu_seconds,
            resident_bytes: kib("VmRSS"),
            virtual_bytes: kib("VmSize"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(max_open_files),
            threads: status.as_deref().and_then(|s| status_value(s, "Threads")),
            start_time_seconds,
        }
    }

    /// Nothing can be read without `/proc`.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn read() -> ProcessStats {
        ProcessStats::default()
    }
}

/// The fields of `/proc/self/stat` after `(comm)`, which may itself hold spaces and
/// parentheses: everything after its last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// The number of a `Name:   123 kB` line of `/proc/self/status`.
fn status_value(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The soft limit of `Max open files` in `/proc/self/limits` (none when `unlimited`).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut build = encoder.encode_descriptor(
            "flagd_build_info",
            "Always 1; the labels say which flagd this is",
            None,
            ConstGauge::new(1i64).metric_type(),
        )?;
        ConstGauge::new(1i64).encode(build.encode_family(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })?)?;
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                stats.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                stats.threads.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                stats.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_start_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 1000";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[14 - 3], "250", "utime");
        assert_eq!(fields[15 - 3], "50", "stime");
        assert_eq!(fields[22 - 3], "12345", "starttime");
    }

    #[test]
    fn status_and_limits_lines_are_read() {
        let status = "Name:\tflagd\nVmSize:\t  1000 kB\nVmRSS:\t   200 kB\nThreads:\t9\n";
        assert_eq!(status_value(status, "VmRSS"), Some(200));
        assert_eq!(status_value(status, "Threads"), Some(9));
        assert_eq!(status_value(status, "Vm"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.threads.unwrap() >= 1);
        assert!(stats.open_fds.unwrap() >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = stats.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        assert!(stats.cpu_seconds.unwrap() >= 0.0);
    }
}
