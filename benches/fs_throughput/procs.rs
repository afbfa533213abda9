//! Child processes (readers like `dd` and `cat`, the raw-SDK child) that are always reaped: a
//! guard kills and waits for whatever is still running when it is dropped, also on panic, and
//! every wait has a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished child left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// Children started together and waited for together.
#[derive(Default)]
pub struct Children {
    running: Vec<Running>,
}

fn drain(stream: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    let mut stream = stream?;
    Some(std::thread::spawn(move || {
        let mut text = String::new();
        let mut bytes = Vec::new();
        if stream.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }))
}

impl Children {
    /// Starts `command` with stdout and stderr captured.
    pub fn spawn(&mut self, mut command: Command) -> Result<(), String> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("spawn {command:?}: {e}"))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        self.running.push(Running { child, stdout, stderr });
        Ok(())
    }

    /// Waits for every child, in start order; past `timeout` kills the rest and fails.
    pub fn wait_all(mut self, timeout: Duration) -> Result<Vec<Finished>, String> {
        let deadline = Instant::now() + timeout;
        let mut done = Vec::new();
        // On an early return, whatever is still in `self.running` is killed by `drop`.
        while let Some(first) = self.running.first_mut() {
            let status = loop {
                match first.child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Ok(None) => return Err(format!("still running after {timeout:?}; killed")),
                    Err(e) => return Err(format!("wait: {e}")),
                }
            };
            let mut running = self.running.remove(0);
            let join = |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
            done.push(Finished { status, stdout: join(running.stdout.take()), stderr: join(running.stderr.take()) });
        }
        Ok(done)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for running in &mut self.running {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// Runs one command to its end, bounded by `timeout`; fails on a non-zero exit, with its stderr.
pub fn run_one(command: Command, timeout: Duration) -> Result<Finished, String> {
    let mut children = Children::default();
    children.spawn(command)?;
    let finished = children.wait_all(timeout)?.pop().expect("one child");
    if !finished.status.success() {
        return Err(format!("exited with {}: {}", finished.status, finished.stderr.trim()));
    }
    Ok(finished)
}
