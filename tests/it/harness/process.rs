//! Processes the tests start: a free loopback port to give a server, and the
//! one guard every spawned server, daemon, push or boot is held by. Dropping
//! the guard kills its process by PID (or its whole process group) and reaps
//! it, waiting a bounded time, so a failing test never leaks a process.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a killed process gets to be reaped.
const REAP: Duration = Duration::from_secs(5);
/// How long a server gets to open its port.
const LISTEN: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running child process; killed by PID and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
    group: bool,
    exited: bool,
}

impl ChildGuard {
    /// Start `cmd`; `what` names it in failure messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard {
            child,
            what: what.to_string(),
            group: false,
            exited: false,
        }
    }

    /// Like [`ChildGuard::spawn`] for a command started as the leader of its
    /// own process group (`process_group(0)`): the guard kills the group.
    pub fn spawn_group(cmd: &mut Command, what: &str) -> ChildGuard {
        let mut guard = Self::spawn(cmd, what);
        guard.group = true;
        guard
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's piped stderr (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self.child.try_wait().unwrap();
        self.exited |= st.is_some();
        st
    }

    /// Wait at most `limit` for it to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait at most `secs` for it to exit; kill it and fail otherwise.
    pub fn wait_for_exit(&mut self, secs: u64) -> ExitStatus {
        match self.wait_timeout(Duration::from_secs(secs)) {
            Some(st) => st,
            None => {
                self.kill();
                panic!(
                    "{} (pid {}) still running after {secs} s",
                    self.what,
                    self.id()
                );
            }
        }
    }

    /// Wait until it listens on loopback `port`; fail (with its stderr, when
    /// piped) if it exits first.
    pub fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + LISTEN;
        loop {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.take_stderr() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "{} exited with {status} before listening on {addr}:\n{err}",
                    self.what
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {} s",
                self.what,
                LISTEN.as_secs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (the process, or its group) unless it has exited, and reap it,
    /// waiting at most a few seconds. Harmless when called again.
    pub fn kill(&mut self) {
        if self.exited || self.try_wait().is_some() {
            return;
        }
        if self.group {
            // The leader has not been reaped, so the group id is still ours.
            let _ = vmifs::sys::kill(-(self.child.id() as i32), libc::SIGKILL);
        } else {
            let _ = self.child.kill();
        }
        let _ = self.wait_timeout(REAP);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
