//! Running external commands (the cluster scripts, kubectl, cargo, mkimage.py) with a time limit
//! and errors that say which command failed and what it printed.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A command with a time limit. Stdout/stderr are inherited by [`Cmd::run`] and captured by
/// [`Cmd::output`]; on timeout the child is killed and the call fails.
pub struct Cmd {
    command: Command,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
    show_stderr: bool,
}

/// What a finished command printed and how it ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl Cmd {
    /// A command with the default time limit of 60 s.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd { command: Command::new(program), timeout: Duration::from_secs(60), stdin: None, show_stderr: false }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.command.env_remove(key);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Bytes written to the command's standard input (otherwise it reads /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Lets stderr through to ours while [`Cmd::output`]/[`Cmd::finish`] capture stdout (for
    /// scripts that log progress on stderr).
    pub fn show_stderr(mut self) -> Cmd {
        self.show_stderr = true;
        self
    }

    /// How the command is shown in messages.
    pub fn display(&self) -> String {
        let mut s = self.command.get_program().to_string_lossy().into_owned();
        for a in self.command.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs with inherited stdout/stderr; fails unless it exits 0 within the time limit.
    pub fn run(mut self) -> Result<()> {
        let shown = self.display();
        self.command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let (status, _, _) = self.spawn_and_wait()?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }

    /// Runs capturing stdout; fails (with stderr in the message) unless it exits 0.
    pub fn output(self) -> Result<String> {
        let shown = self.display();
        let f = self.finish()?;
        if !f.success() {
            bail!("`{shown}` failed ({}): {}", f.status, f.stderr.trim());
        }
        Ok(f.stdout)
    }

    /// Runs capturing stdout and stderr; the exit status is the caller's to judge.
    pub fn finish(mut self) -> Result<Finished> {
        let stderr = if self.show_stderr { Stdio::inherit() } else { Stdio::piped() };
        self.command.stdout(Stdio::piped()).stderr(stderr);
        let (status, stdout, stderr) = self.spawn_and_wait()?;
        Ok(Finished { status, stdout, stderr })
    }

    fn spawn_and_wait(mut self) -> Result<(ExitStatus, String, String)> {
        let shown = self.display();
        self.command.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = self.command.spawn().with_context(|| format!("cannot start `{shown}`"))?;
        let feeder = self.stdin.take().and_then(|bytes| {
            child.stdin.take().map(|mut pipe| {
                thread::spawn(move || {
                    // A command that exits without reading its input is not an error here.
                    let _ = pipe.write_all(&bytes);
                })
            })
        });
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let status = wait_with_deadline(&mut child, self.timeout);
        if let Some(f) = feeder {
            let _ = f.join();
        }
        // One grace period for both pipes, from the moment the command ended.
        let grace = Instant::now() + Duration::from_secs(5);
        let stdout = out.map(|d| collect(d, grace)).unwrap_or_default();
        let stderr = err.map(|d| collect(d, grace)).unwrap_or_default();
        match status {
            Some(status) => Ok((status, stdout, stderr)),
            None => {
                bail!("`{shown}` did not finish within {:?} and was killed; stderr: {}", self.timeout, stderr.trim())
            }
        }
    }
}

/// What a reader thread has read from a pipe so far, and whether it reached EOF.
type Drained = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

/// Reads `pipe` to EOF in a thread, keeping what it read in the shared buffer.
fn drain(mut pipe: impl Read + Send + 'static) -> Drained {
    let shared: Drained = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
    let writer = Arc::clone(&shared);
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            let n = pipe.read(&mut chunk).unwrap_or(0);
            let (lock, cv) = &*writer;
            let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
            if n == 0 {
                state.1 = true;
                cv.notify_all();
                return;
            }
            state.0.extend_from_slice(&chunk[..n]);
        }
    });
    shared
}

/// What was read, once the pipe reached EOF or, at the latest, at `grace` (a daemon the command
/// started in the background may hold the pipe open forever).
fn collect(drained: Drained, grace: Instant) -> String {
    let (lock, cv) = &*drained;
    let state = lock.lock().unwrap_or_else(|p| p.into_inner());
    let wait = grace.saturating_duration_since(Instant::now());
    let (state, _) = cv.wait_timeout_while(state, wait, |s| !s.1).unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&state.0).into_owned()
}

/// Waits for the child until `timeout`; kills it and returns `None` when time runs out.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_captures_stdout_and_feeds_stdin() {
        let out = Cmd::new("cat").stdin("hello").output().unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = Cmd::new("sh").args(["-c", "echo oops >&2; exit 3"]).output().unwrap_err().to_string();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("oops"), "{err}");
    }

    #[test]
    fn a_background_process_holding_stdout_does_not_block_the_result() {
        let t = Instant::now();
        let out = Cmd::new("sh").args(["-c", "sleep 8 & echo hi"]).output().unwrap();
        assert_eq!(out.trim(), "hi");
        assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    }

    #[test]
    fn timeout_kills_the_command() {
        let t = Instant::now();
        let err = Cmd::new("sleep").arg("10").timeout(Duration::from_millis(300)).output().unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
