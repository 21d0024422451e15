//! What a load run measured: the `Report`, its table (`Display`; `serde` gives the
//! JSON line), and the CPU clocks it reads for the load tool and the server.

use serde::Serialize;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub conns: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    /// `frames`, `resp` or `raw`.
    pub wire: String,
    pub op: String,
    pub size: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// CPU the load generator itself used, as a share of one core (1.0 = saturated).
    pub client_cpu: f64,
    /// With `server_pid`: the server's CPU time (user + system) over the measured
    /// window, per request, in microseconds.
    pub server_cpu_us_per_req: Option<f64>,
    /// The user-space part of it (the rest is the kernel's: system calls, TCP).
    pub server_user_us_per_req: Option<f64>,
}

/// The table `frameloop load` prints, one line per measure.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => format!("pipeline {}", self.pipeline),
        };
        writeln!(
            f,
            "{} ({}) x {} conns, {shape}, {:.1} s measured",
            self.op, self.wire, self.conns, self.seconds
        )?;
        writeln!(
            f,
            "  requests   {:>12}   ({} B bodies)",
            self.requests, self.size
        )?;
        writeln!(f, "  req/s      {:>12.0}", self.rps)?;
        writeln!(f, "  errors     {:>12}", self.errors)?;
        writeln!(
            f,
            "  latency    p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        )?;
        writeln!(
            f,
            "  load CPU   {:>11.0}% of one core",
            self.client_cpu * 100.0
        )?;
        if let (Some(us), Some(user)) = (self.server_cpu_us_per_req, self.server_user_us_per_req) {
            writeln!(
                f,
                "  server CPU {us:>12.2} us per request ({user:.2} user, {:.2} kernel)",
                us - user
            )?;
        }
        Ok(())
    }
}

/// CPU time a process on this machine has used, user and system, from `/proc/PID/stat`.
pub(super) fn process_cpu(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let secs = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz as f64);
    (hz > 0).then(|| (secs(user), secs(system)))
}

/// CPU time (user + system) this process has used.
pub(super) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
