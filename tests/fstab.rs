//! End to end: mount(8) runs mount-s3 from fstab lines and `mount -t`, with Mountpoint's option
//! rules, and `umount` ends the daemon.
//!
//! Type `mount-s3` needs `/sbin/mount.mount-s3`, a global path: [`HelperLink`] points it at
//! the binary under test for the length of one `mount` call, under a lock shared by every test
//! process on the machine, and puts back what was there. A helper that is not a link into a
//! build directory belongs to a real installation and is never touched: those checks are then
//! skipped with a note. Type `fuse` (`/path/mount-s3#bucket`) needs no helper and always runs.

mod common;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::mount::{UnmountGuard, binary, is_mounted, sealed_command, wait_no_process_mentioning};
use common::s3_server::LocalS3;

const HELPER: &str = "/sbin/mount.mount-s3";
/// Machine-wide, so test binaries of every checkout agree on it (`/run/lock` if the system has it).
fn helper_lock() -> &'static str {
    if Path::new("/run/lock").is_dir() {
        "/run/lock/mount-s3-test-helper.lock"
    } else {
        "/tmp/mount-s3-test-helper.lock"
    }
}

/// `/sbin/mount.mount-s3` -> the binary under test, while this value lives.
struct HelperLink {
    previous: Option<PathBuf>,
    _lock: nix::fcntl::Flock<File>,
}

impl HelperLink {
    /// `None` when the helper belongs to a real installation.
    fn install() -> Option<HelperLink> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(helper_lock()).unwrap();
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
        let previous = match std::fs::symlink_metadata(HELPER) {
            Err(_) => None,
            Ok(meta) if meta.file_type().is_symlink() => Some(std::fs::read_link(HELPER).unwrap()),
            Ok(_) => return None,
        };
        if let Some(previous) = &previous
            && !previous.to_string_lossy().contains("/debug/mount-s3")
        {
            return None;
        }
        replace_link(&binary());
        Some(HelperLink { previous, _lock: lock })
    }
}

fn replace_link(target: &Path) {
    let staged = format!("{HELPER}.test-{}", std::process::id());
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged).unwrap();
    std::fs::rename(&staged, HELPER).unwrap();
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        match &self.previous {
            Some(previous) => replace_link(previous),
            None => {
                let _ = std::fs::remove_file(HELPER);
            }
        }
    }
}

fn options(s3: &LocalS3) -> String {
    format!("endpoint-url={},force-path-style,region=us-east-1", s3.endpoint)
}

/// Runs `mount args...` with the server's credentials in a sealed environment.
fn mount_cmd(s3: &LocalS3, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    sealed_command("mount", &s3.env_vars(), home.path()).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn umount_and_wait_for_the_daemon(path: &Path) {
    assert!(std::process::Command::new("umount").arg(path).status().unwrap().success());
    assert!(!is_mounted(path));
    assert!(wait_no_process_mentioning(path.to_str().unwrap(), Duration::from_secs(10)), "daemon still running");
}

#[test]
fn fstab_lines_mount_with_mount_a_and_umount_ends_the_daemon() {
    let s3 = LocalS3::start();
    s3.put("pre/hello.txt", b"hi");
    s3.put("pre/bye.txt", b"bye");
    let dir = tempfile::tempdir().unwrap();
    let (typed, fuse) = (dir.path().join("typed"), dir.path().join("fuse"));
    for m in [&typed, &fuse] {
        std::fs::create_dir(m).unwrap();
    }
    let _guards = (UnmountGuard(typed.clone()), UnmountGuard(fuse.clone()));
    let helper = HelperLink::install();
    let typed_expected = helper.is_some();
    let mut fstab = format!(
        "# fuse type: mount.fuse runs the program before '#'\n\
         {}#{}  {}  fuse  _netdev,nosuid,nodev,nofail,ro,{}  0  0\n",
        binary().display(),
        s3.bucket,
        fuse.display(),
        options(&s3)
    );
    if helper.is_some() {
        fstab.push_str(&format!(
            "s3://{}/pre/ {} mount-s3 _netdev,nosuid,nodev,nofail,rw,allow-delete,uid=7,{} 0 0\n",
            s3.bucket,
            typed.display(),
            options(&s3)
        ));
    } else {
        eprintln!("note: {HELPER} belongs to an installed mount-s3; the `mount-s3` fstab type is not tested");
    }
    let fstab_path = dir.path().join("fstab");
    std::fs::write(&fstab_path, &fstab).unwrap();

    let out = mount_cmd(&s3, &["-a", "-T", fstab_path.to_str().unwrap()]);
    drop(helper);
    assert!(out.status.success(), "mount -a failed: {}\n{fstab}", text(&out));
    assert!(text(&out).contains("Using 'fstab' style options"), "{}", text(&out));

    assert!(is_mounted(&fuse));
    assert_eq!(std::fs::read(fuse.join("pre/hello.txt")).unwrap(), b"hi");
    let err = std::fs::write(fuse.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "ro became --read-only");
    umount_and_wait_for_the_daemon(&fuse);

    // `nofail` hides a failed entry from mount's exit status: check the mount itself.
    assert_eq!(is_mounted(&typed), typed_expected, "{}", text(&out));
    if typed_expected {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::read(typed.join("hello.txt")).unwrap(), b"hi", "the URI's prefix is mounted");
        assert_eq!(std::fs::metadata(typed.join("hello.txt")).unwrap().uid(), 7);
        std::fs::remove_file(typed.join("bye.txt")).unwrap();
        assert_eq!(s3.get("pre/bye.txt"), None, "allow-delete reached the daemon");
        umount_and_wait_for_the_daemon(&typed);
    }
}

#[test]
fn mount_t_mount_s3_passes_options_and_reports_bad_ones() {
    let s3 = LocalS3::start();
    s3.put("f.txt", b"data");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = UnmountGuard(mnt.clone());
    let Some(helper) = HelperLink::install() else {
        eprintln!("note: {HELPER} belongs to an installed mount-s3; `mount -t mount-s3` is not tested");
        return;
    };
    let source = format!("s3://{}/", s3.bucket);
    let mnt_s = mnt.to_str().unwrap();
    let good = format!("ro,{}", options(&s3));
    let out = mount_cmd(&s3, &["-t", "mount-s3", &source, mnt_s, "-o", &good]);
    let bad = mount_cmd(&s3, &["-t", "mount-s3", &source, dir.path().to_str().unwrap(), "-o", "foreground"]);
    let unknown = mount_cmd(&s3, &["-t", "mount-s3", &source, dir.path().to_str().unwrap(), "-o", "no-such-option"]);
    drop(helper);

    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(mnt.join("f.txt")).unwrap(), b"data");
    assert_eq!(std::fs::write(mnt.join("g.txt"), b"x").unwrap_err().raw_os_error(), Some(libc::EROFS));
    umount_and_wait_for_the_daemon(&mnt);

    assert!(!bad.status.success());
    assert!(text(&bad).contains("fstab mounts always run in the background"), "{}", text(&bad));
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("--no-such-option"), "{}", text(&unknown));
    assert!(!is_mounted(dir.path()));
}

/// Every entry of examples/fstab/fstab.example is a command line mount-s3 accepts.
#[test]
fn the_fstab_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fstab/fstab.example");
    let example = std::fs::read_to_string(path).unwrap();
    let mut entries = 0;
    for line in example.lines() {
        // The commented-out entry for an S3-compatible store counts too.
        let line = line.strip_prefix("# ").unwrap_or(line);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 6 || !["mount-s3", "fuse"].contains(&fields[2]) {
            continue;
        }
        let argv = ["mount-s3", fields[0], fields[1], "-o", fields[3]].map(std::ffi::OsString::from).to_vec();
        let config = mount_s3::cli::parse_command_line_with(argv, &mount_s3::cli::Environment::current())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(config.fstab_style && !config.foreground, "{line}");
        entries += 1;
    }
    assert_eq!(entries, 4);
}
