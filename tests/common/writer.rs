//! A file written by another process: [`OutsideWriter`].
//!
//! Why: the test binary runs tests in parallel threads, and any of them may fork (to start a
//! daemon, run `umount`, ...). A fork copies every open descriptor, and the child's exec then
//! closes the copies, which FUSE sees as a close() (FLUSH) by another process. That marks a
//! file being written as closed by someone else, so its upload may complete at the next open,
//! as Mountpoint allows. A test that checks what happens *while* a file is open for writing
//! therefore keeps the descriptor in a small single-threaded process of its own, which never
//! forks.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The writer: creates the file (`O_CREAT | O_EXCL`), then writes and closes on request.
const SCRIPT: &str = r#"
import os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    print("ok", flush=True)
except OSError as e:
    print("err", e.errno, flush=True)
    sys.exit(0)
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "write":
            data = bytes([int(args[0])]) * int(args[1])
            if os.write(fd, data) != len(data):
                raise OSError(5, "short write")
        elif cmd == "close":
            os.close(fd)
        print("ok", flush=True)
    except OSError as e:
        print("err", e.errno, flush=True)
    if cmd == "close":
        break
"#;

/// A file created and held open for writing by a `python3` child process.
pub struct OutsideWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl OutsideWriter {
    /// Creates `path` in a new process; `Err(errno)` if the open failed.
    pub fn create(path: &Path) -> Result<OutsideWriter, i32> {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(path)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut writer = OutsideWriter { child, stdin, stdout };
        writer.answer().map(|()| writer)
    }

    /// Writes `len` bytes of value `byte` at the current offset.
    pub fn write(&mut self, byte: u8, len: usize) -> Result<(), i32> {
        self.ask(&format!("write {byte} {len}"))
    }

    /// Closes the file (the FLUSH and then the RELEASE of its only descriptor).
    pub fn close(mut self) -> Result<(), i32> {
        self.ask("close")
    }

    fn ask(&mut self, line: &str) -> Result<(), i32> {
        let stdin = self.stdin.as_mut().expect("writer still open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("talk to the writer");
        self.answer()
    }

    fn answer(&mut self) -> Result<(), i32> {
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("read the writer's answer");
        match reply.split_whitespace().collect::<Vec<_>>()[..] {
            ["ok"] => Ok(()),
            ["err", errno] => Err(errno.parse().unwrap()),
            _ => panic!("unexpected answer from the writer: {reply:?}"),
        }
    }
}

impl Drop for OutsideWriter {
    fn drop(&mut self) {
        // Closing stdin ends the loop; the file closes as the process exits.
        self.stdin.take();
        let _ = self.child.wait();
    }
}
