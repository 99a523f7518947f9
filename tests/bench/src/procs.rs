//! The processes a scenario measures: `shade serve`, `mosquitto` and
//! `shade-agent run`, each started by the bench on a loopback port it picked
//! free, with a temporary data directory, and killed by pid (SIGKILL) when
//! its guard is dropped. Also: free ports, resident memory, the machine.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a process may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nobody listened on a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// The directory holding `shade`, `shade-agent` (and this binary):
/// `--bin-dir`, else the directory of the running executable.
pub(crate) fn bin_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    let exe = std::env::current_exe().context("path of shade-bench")?;
    let dir = exe
        .parent()
        .context("shade-bench has no parent directory")?
        .to_owned();
    if !dir.ends_with("release") {
        eprintln!(
            "warning: {} is not a release build directory; figures from debug binaries mean nothing",
            dir.display()
        );
    }
    Ok(dir)
}

/// `bins/name`, or an error that says how to build it: cargo does not build
/// these beside `shade-bench` unless asked.
fn binary(bins: &Path, name: &str) -> Result<PathBuf> {
    let bin = bins.join(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p shade-broker -p shade-agent -p shade-bench`, or pass --bin-dir",
            bin.display()
        );
    }
    Ok(bin)
}

/// Raises the soft limit of open files to the hard limit (10,000 client
/// connections need 10,000 descriptors in this process). Returns the limit.
pub(crate) fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}

/// VmRSS of `pid` in bytes, from /proc/PID/status.
pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a number")?
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib * 1024)
}

/// CPU seconds (user + system) of each thread of `pid`, summed by thread
/// name (`shade-store`, `shade-tcp-0`, rumqttd's router...), from
/// /proc/PID/task/*/stat. The scenarios diff two samples to show which
/// thread is busy.
pub(crate) fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let tick = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ... utime stime": comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After the comm: state is field 0, utime 11, stime 12.
        *out.entry(comm).or_insert(0.0) += (cpu(11) + cpu(12)) / tick;
    }
    out
}

/// Cores busy from [`CpuMeter::start`] to [`CpuMeter::finish`]: the
/// server by thread, and this load generator, which shares the machine.
pub(crate) struct CpuMeter {
    server_pid: u32,
    server: BTreeMap<String, f64>,
    bench: BTreeMap<String, f64>,
    started: std::time::Instant,
}

impl CpuMeter {
    pub(crate) fn start(server_pid: u32) -> CpuMeter {
        CpuMeter {
            server_pid,
            server: thread_cpu(server_pid),
            bench: thread_cpu(std::process::id()),
            started: std::time::Instant::now(),
        }
    }

    /// Adds `{prefix}cpu.server` (the total), `{prefix}cpu.server.<thread>`
    /// and `{prefix}cpu.bench` to `m`.
    pub(crate) fn finish(&self, m: &mut crate::Metrics, prefix: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let server = cpu_between(&self.server, &thread_cpu(self.server_pid), secs);
        let bench = cpu_between(&self.bench, &thread_cpu(std::process::id()), secs);
        m.insert(format!("{prefix}cpu.server"), server.values().sum());
        for (thread, cores) in server {
            m.insert(format!("{prefix}cpu.server.{thread}"), cores);
        }
        m.insert(format!("{prefix}cpu.bench"), bench.values().sum());
    }
}

/// What each thread name used between two [`thread_cpu`] samples, as a
/// fraction of one core over `secs`.
pub(crate) fn cpu_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) / secs,
            )
        })
        .filter(|(_, v)| *v >= 0.01)
        .collect()
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Does `port` answer an MQTT 3.1.1 CONNECT with a successful CONNACK?
pub(crate) fn mqtt_probe(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let id = b"shade-bench-probe";
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0];
    connect.push(id.len() as u8);
    connect.extend_from_slice(id);
    connect[1] = (connect.len() - 2) as u8;
    let mut connack = [0u8; 4];
    let ok = stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .is_ok()
        && stream.write_all(&connect).is_ok()
        && stream.read_exact(&mut connack).is_ok()
        && connack == [0x20, 2, 0, 0];
    let _ = stream.write_all(&[0xE0, 0]);
    ok
}

/// A child process killed by pid (SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("dup log file")?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    pub(crate) fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("{} is not running", self.name))
    }

    /// SIGKILL by pid, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, then waits (bounded) and SIGKILLs if it must.
    pub(crate) fn terminate(&mut self, within: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().context("wait")?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("{} did not exit within {within:?} of SIGTERM", self.name)
    }

    /// Waits (bounded) until `port` answers MQTT, or the process exits.
    pub(crate) fn wait_mqtt(&mut self, port: u16) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "{} exited with {status} before listening; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if mqtt_probe(port) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not listen on {port} within {START_TIMEOUT:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Settings written into the broker config of a run.
#[derive(Debug, Clone)]
pub(crate) struct ShadeOptions {
    pub(crate) max_connections: usize,
    pub(crate) max_document_bytes: usize,
    pub(crate) max_payload_bytes: usize,
    /// Serve the HTTP API on a port of its own (else `--http off`).
    pub(crate) http: bool,
}

impl Default for ShadeOptions {
    fn default() -> Self {
        Self {
            max_connections: 15_000,
            max_document_bytes: 8192,
            max_payload_bytes: 131_072,
            http: false,
        }
    }
}

/// `shade serve` on a port of its own, with data in a temp dir that lives
/// as long as this value; can be killed and started again on the same port.
#[derive(Debug)]
pub(crate) struct Shade {
    pub(crate) port: u16,
    /// The HTTP API's port, when [`ShadeOptions::http`].
    pub(crate) http_port: Option<u16>,
    pub(crate) dir: tempfile::TempDir,
    bin: PathBuf,
    proc: Option<Proc>,
    runs: usize,
}

impl Shade {
    pub(crate) fn start(bins: &Path, opts: &ShadeOptions) -> Result<Shade> {
        let dir = tempfile::Builder::new()
            .prefix("shade-bench-")
            .tempdir()
            .context("create a temp dir")?;
        // The rate and in-flight limits (20 requests/s per thing, 1000 per
        // client) would turn load into 429s; the benchmarks measure
        // capacity, so they are lifted (docs/BENCHMARKS.md).
        let mut config = format!(
            "[limits]\nmax_document_bytes = {}\nmax_payload_bytes = {}\n\
             requests_per_second_per_thing = 1000000\nmax_inflight_per_client = 100000\n\n\
             [broker]\nmax_connections = {}\n",
            opts.max_document_bytes, opts.max_payload_bytes, opts.max_connections
        );
        if opts.http {
            config.push_str(&format!(
                "\n[http]\nmax_connections = {}\n",
                opts.max_connections
            ));
        }
        std::fs::write(dir.path().join("broker.toml"), config).context("write broker.toml")?;
        let mut shade = Shade {
            port: free_port()?,
            http_port: if opts.http { Some(free_port()?) } else { None },
            dir,
            bin: binary(bins, "shade")?,
            proc: None,
            runs: 0,
        };
        shade.launch()?;
        Ok(shade)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Spawns the process and waits until it answers MQTT.
    pub(crate) fn launch(&mut self) -> Result<Duration> {
        self.spawn_only()?;
        let port = self.port;
        self.proc_mut()?.wait_mqtt(port)
    }

    /// Spawns the process without waiting.
    pub(crate) fn spawn_only(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("broker.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(self.data_dir())
            // Without it, each would also listen on 127.0.0.1:8080.
            .arg("--http")
            .arg(
                self.http_port
                    .map_or("off".to_owned(), |p| format!("127.0.0.1:{p}")),
            )
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        self.runs += 1;
        let log = self.dir.path().join(format!("serve-{}.log", self.runs));
        self.proc = Some(Proc::spawn("shade serve", cmd, log)?);
        Ok(())
    }

    pub(crate) fn proc_mut(&mut self) -> Result<&mut Proc> {
        self.proc.as_mut().context("shade serve is not running")
    }

    pub(crate) fn pid(&self) -> Result<u32> {
        self.proc
            .as_ref()
            .context("shade serve is not running")?
            .pid()
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub(crate) fn terminate(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(mut p) => p.terminate(Duration::from_secs(60)),
            None => Ok(()),
        }
    }
}

/// Debian's `mosquitto`, anonymous, on a loopback port, retained messages
/// in memory (persistence off: see docs/BENCHMARKS.md).
#[derive(Debug)]
pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
    proc: Proc,
}

impl Mosquitto {
    pub(crate) fn pid(&self) -> Result<u32> {
        self.proc.pid()
    }

    pub(crate) fn start() -> Result<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("mosquitto is not installed: apt-get install mosquitto")?;
        let dir = tempfile::Builder::new()
            .prefix("shade-bench-mosquitto-")
            .tempdir()
            .context("create a temp dir")?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )
        .context("write mosquitto.conf")?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf);
        let mut proc = Proc::spawn("mosquitto", cmd, dir.path().join("mosquitto.log"))?;
        proc.wait_mqtt(port)?;
        Ok(Mosquitto {
            port,
            _dir: dir,
            proc,
        })
    }
}

/// One `shade-agent` command line, bounded in time; returns its stdout.
/// Its output is read while it runs (`state --json` of a large replica
/// prints megabytes, more than a pipe holds).
pub(crate) fn agent_cli(bins: &Path, args: &[String], within: Duration) -> Result<String> {
    let child = Command::new(binary(bins, "shade-agent")?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn shade-agent")?;
    let pid = child.id();
    let what = args.first().cloned().unwrap_or_default();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(within) {
        Ok(out) => out.context("shade-agent output")?,
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            bail!("shade-agent {what} took longer than {within:?}");
        }
    };
    if !out.status.success() {
        bail!(
            "shade-agent {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `shade-agent run --config FILE`, killed by pid when dropped.
pub(crate) fn agent_run(bins: &Path, config: &Path, log: PathBuf) -> Result<Proc> {
    let mut cmd = Command::new(binary(bins, "shade-agent")?);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    Proc::spawn("shade-agent run", cmd, log)
}

/// nproc, CPU model, memory, kernel: the machine the figures come from.
pub(crate) fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    serde_json::json!({ "nproc": nproc, "cpu": model, "memory": mem, "kernel": kernel })
}
