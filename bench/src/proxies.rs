//! The processes under test: the echo upstream, nginx, HAProxy and the gateway, each started
//! from a config file written here and pinned to a core with `taskset`.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::procstat;

/// How long a process may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Subdirectory of the work directory holding the gateway's config and JWT key.
pub const GATEWAY_FILES: &str = "gateway";
/// Connections allowed per process; a proxy needs two descriptors for each.
const MAX_CONNECTIONS: u32 = 9_900;

/// How to start one process, kept so that it can be started afresh.
#[derive(Debug, Clone)]
pub struct Launch {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// CPU the process is pinned to.
    pub core: usize,
    /// Address that accepts connections once the process is ready.
    pub ready_addr: SocketAddr,
    /// stdout and stderr go here.
    pub log: PathBuf,
}

/// A running process, stopped when dropped.
pub struct Running {
    launch: Launch,
    child: Child,
    /// The process doing the work: the worker under a master, else the process itself.
    pub measured_pid: u32,
}

impl Launch {
    /// Starts the process and waits until `ready_addr` accepts a connection.
    pub fn start(&self) -> anyhow::Result<Running> {
        let log =
            File::create(&self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(self.core.to_string())
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        // taskset execs the program, so the child's pid is the program's.
        let mut running = Running {
            measured_pid: child.id(),
            launch: self.clone(),
            child,
        };
        running.await_ready()?;
        running.measured_pid =
            procstat::first_child(running.child.id())?.unwrap_or(running.child.id());
        Ok(running)
    }
}

impl Running {
    fn await_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before accepting connections; its log {}:\n{}",
                    self.launch.name,
                    self.launch.log.display(),
                    fs::read_to_string(&self.launch.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&self.launch.ready_addr, Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept connections on {} within {START_TIMEOUT:?}; see {}",
                    self.launch.name,
                    self.launch.ready_addr,
                    self.launch.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn name(&self) -> &'static str {
        self.launch.name
    }

    /// Stops this process and starts a fresh one from the same launch.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        *self = self.launch.start()?;
        Ok(())
    }

    /// Waits until the measured process holds no more descriptors than `baseline`, i.e. the
    /// previous run's connections are gone; returns whether that happened in time.
    pub fn await_fds_at_most(&self, baseline: usize, within: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            if procstat::open_fds(self.measured_pid)? <= baseline {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets an nginx master take its worker down with it.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A certificate and its key, written where every proxy can read them.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    /// Names the key type in file names and tables, e.g. `ecdsa`.
    pub label: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file, as HAProxy takes them.
    pub combined: PathBuf,
}

/// Ports and files shared by the launches.
pub struct Layout {
    pub dir: PathBuf,
    pub echo: SocketAddr,
    pub proxy_core: usize,
    pub load_core: usize,
}

impl Layout {
    pub fn echo(&self, bench_exe: &Path) -> Launch {
        Launch {
            name: "echo",
            program: bench_exe.to_owned(),
            args: vec!["echo".into(), "--listen".into(), self.echo.to_string()],
            env: Vec::new(),
            core: self.load_core,
            ready_addr: self.echo,
            log: self.dir.join("echo.log"),
        }
    }

    /// The floor relay (this benchmark's own `floor` command) in front of the echo upstream.
    pub fn floor(&self, bench_exe: &Path, listen: SocketAddr) -> Launch {
        Launch {
            name: "floor",
            program: bench_exe.to_owned(),
            args: vec![
                "floor".into(),
                "--listen".into(),
                listen.to_string(),
                "--upstream".into(),
                self.echo.to_string(),
            ],
            env: Vec::new(),
            core: self.proxy_core,
            ready_addr: listen,
            log: self.dir.join("floor.log"),
        }
    }

    /// nginx as a WebSocket reverse proxy with one worker process; with `tls`, it terminates
    /// TLS 1.3 with that certificate.
    pub fn nginx(
        &self,
        listen: SocketAddr,
        tls: Option<&ServingCertificate>,
    ) -> anyhow::Result<Launch> {
        let dir = self.dir.display();
        let suffix = tls.map_or(String::new(), |tls| format!("-{}", tls.label));
        // Stateful resumption only, two tickets per handshake (OpenSSL's default number), as
        // the gateway's rustls does by default.
        let tls_directives = match tls {
            None => String::new(),
            Some(tls) => format!(
                "        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        ssl_ecdh_curve X25519;
        ssl_session_tickets off;
        ssl_session_cache shared:SSL{suffix}:10m;
",
                cert = tls.cert.display(),
                key = tls.key.display()
            ),
        };
        let ssl = if tls.is_some() { " ssl" } else { "" };
        let config = format!(
            "worker_processes 1;
worker_rlimit_nofile 20000;
error_log {dir}/nginx{suffix}-error.log warn;
pid {dir}/nginx{suffix}.pid;
events {{
    worker_connections 20000;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    server {{
        listen {listen}{ssl} backlog=4096;
{tls_directives}        location / {{
            proxy_pass http://{echo};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection \"upgrade\";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
",
            echo = self.echo
        );
        let path = self.write(&format!("nginx{suffix}.conf"), &config)?;
        Ok(Launch {
            name: "nginx",
            program: "nginx".into(),
            args: vec![
                "-p".into(),
                dir.to_string(),
                "-c".into(),
                path.display().to_string(),
                "-g".into(),
                "daemon off;".into(),
            ],
            env: Vec::new(),
            core: self.proxy_core,
            ready_addr: listen,
            log: self.dir.join(format!("nginx{suffix}.log")),
        })
    }

    /// HAProxy in HTTP mode (it switches to a tunnel after the 101) with one thread; with
    /// `tls`, it terminates TLS 1.3 with that certificate.
    pub fn haproxy(
        &self,
        listen: SocketAddr,
        tls: Option<&ServingCertificate>,
    ) -> anyhow::Result<Launch> {
        let suffix = tls.map_or(String::new(), |tls| format!("-{}", tls.label));
        // Stateful resumption only (its session cache; two tickets per handshake, OpenSSL's
        // default), as the gateway's rustls does by default.
        let (tls_global, bind_tls) = match tls {
            None => (String::new(), String::new()),
            Some(tls) => (
                "    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
"
                .to_owned(),
                format!(" ssl crt {} curves X25519", tls.combined.display()),
            ),
        };
        let config = format!(
            "global
    nbthread 1
    maxconn {MAX_CONNECTIONS}
{tls_global}defaults
    mode http
    timeout connect 5s
    timeout http-request 10s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
frontend bench
    bind {listen}{bind_tls}
    default_backend echo
backend echo
    server echo {echo}
",
            echo = self.echo
        );
        let path = self.write(&format!("haproxy{suffix}.cfg"), &config)?;
        Ok(Launch {
            name: "haproxy",
            program: "haproxy".into(),
            args: vec!["-f".into(), path.display().to_string(), "-db".into()],
            env: Vec::new(),
            core: self.proxy_core,
            ready_addr: listen,
            log: self.dir.join(format!("haproxy{suffix}.log")),
        })
    }

    /// The gateway with JWT (HS256) checked on every upgrade and rate limits switched on,
    /// set high enough never to refuse the benchmark's own traffic; one thread. With `tls`,
    /// it terminates TLS with that certificate (rustls' defaults: TLS 1.2 and 1.3, stateful
    /// resumption with two tickets per handshake).
    pub fn gateway(
        &self,
        program: &Path,
        listen: SocketAddr,
        metrics: SocketAddr,
        jwt_key_file: &Path,
        claims: &crate::token::BenchClaims,
        tls: Option<&ServingCertificate>,
    ) -> anyhow::Result<Launch> {
        let suffix = tls.map_or(String::new(), |tls| format!("-{}", tls.label));
        let tls_section = match tls {
            None => String::new(),
            Some(tls) => format!(
                "tls:\n  certFile: {}\n  keyFile: {}\n",
                tls.cert.display(),
                tls.key.display()
            ),
        };
        let config = format!(
            "listen:
  address: {listen}
  path: /
metrics:
  address: {metrics}
{tls_section}upstream:
  url: ws://{echo}/
auth:
  jwt:
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [HS256]
    keyFile: {key}
limits:
  maxConnections: 10000
  connectionsPerIP: {{perSecond: 1000000, burst: 1000000}}
  messagesPerConnection: {{perSecond: 1000000, burst: 1000000}}
",
            echo = self.echo,
            issuer = claims.iss,
            audience = claims.aud,
            key = jwt_key_file.display()
        );
        // A directory of its own: the gateway reloads on any change in the directories it
        // watches, and the process logs written next to them would trigger reloads mid-run.
        let path = self.write(&format!("{GATEWAY_FILES}/gateway{suffix}.yaml"), &config)?;
        let check = Command::new(program)
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .with_context(|| format!("running {} --check", program.display()))?;
        if !check.status.success() {
            bail!(
                "the gateway refused the benchmark config {}: {}{}",
                path.display(),
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        Ok(Launch {
            name: "gateway",
            program: program.to_owned(),
            args: vec![
                "--config".into(),
                path.display().to_string(),
                "--worker-threads".into(),
                "1".into(),
            ],
            env: vec![("RUST_LOG".into(), "warn".into())],
            core: self.proxy_core,
            ready_addr: listen,
            log: self.dir.join(format!("gateway{suffix}.log")),
        })
    }

    /// Writes `relative` (which may name a subdirectory) under the work directory.
    pub fn write(&self, relative: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
