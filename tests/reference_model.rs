//! Reference-model test: random sequences of operations applied both to the file-system core
//! (over the in-memory client) and to a simple model of "a bucket plus local directories"; after
//! every step the tree the file system shows (names, kinds, file bytes) must equal the model's,
//! and every operation must succeed or fail exactly as the model predicts.
//!
//! The model encodes Mountpoint's rules directly: keys split on `/`; a key with an empty, `.` or
//! `..` component is hidden from that component down; directories shadow files of the same
//! name; local (mkdir) directories shadow remote files and stay until this mount writes a
//! file under them, whatever other clients do under them meanwhile.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::sync::Arc;

use common::data::pattern;
use mount_s3::client::memory::InMemoryClient;
use mount_s3::fs::namespace::InodeKind;
use mount_s3::fs::{FsConfig, S3Filesystem};
use proptest::prelude::*;

const PID: u32 = 7;

#[derive(Clone, Debug)]
enum Op {
    /// create + write + close through the file system.
    Write {
        path: String,
        len: usize,
        seed: u8,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    /// rename(2) with `--allow-rename` (no `--allow-overwrite`).
    Rename {
        from: String,
        to: String,
    },
    /// Another client writes or deletes a key.
    RemotePut {
        key: String,
        len: usize,
        seed: u8,
    },
    RemoteDelete {
        key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

#[derive(Default, Debug)]
struct Model {
    objects: BTreeMap<String, Vec<u8>>,
    local_dirs: BTreeSet<String>,
}

fn valid(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".."
}

impl Model {
    /// The visible tree: path -> node.
    fn tree(&self) -> BTreeMap<String, Node> {
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (key, data) in &self.objects {
            let parts: Vec<&str> = key.split('/').collect();
            let mut path = String::new();
            for (i, part) in parts.iter().enumerate() {
                let last = i == parts.len() - 1;
                if last && part.is_empty() {
                    break; // a directory marker: its directories are registered already
                }
                if !valid(part) {
                    break;
                }
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
                if last {
                    files.insert(path.clone(), data.clone());
                } else {
                    dirs.insert(path.clone());
                }
            }
        }
        let mut tree = BTreeMap::new();
        for (path, data) in files {
            tree.insert(path, Node::File(data));
        }
        for d in dirs.iter().chain(self.local_dirs.iter()) {
            // Every ancestor of a directory is a directory too (local dirs are made under dirs).
            let mut p = String::new();
            for part in d.split('/') {
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(part);
                tree.insert(p.clone(), Node::Dir);
            }
        }
        tree
    }

    fn parent(path: &str) -> Option<&str> {
        path.rfind('/').map(|i| &path[..i])
    }

    /// Resolves every ancestor of `path` from the root, as a path walk does.
    fn parent_is_dir(&self, tree: &BTreeMap<String, Node>, path: &str) -> Result<(), i32> {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            match tree.get(&parts[..i].join("/")) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(libc::ENOTDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Ok(())
    }

    /// Applies a local operation; returns the errno the file system must give.
    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        let tree = self.tree();
        match op {
            Op::Write { path, len, seed } => {
                self.parent_is_dir(&tree, path)?;
                if tree.contains_key(path) {
                    return Err(libc::EEXIST);
                }
                self.objects.insert(path.clone(), pattern(*len, u64::from(*seed)));
                // Local ancestors are in S3 now.
                let mut p = path.as_str();
                while let Some(parent) = Self::parent(p) {
                    self.local_dirs.remove(parent);
                    p = parent;
                }
                Ok(())
            }
            Op::Unlink { path } => {
                self.parent_is_dir(&tree, path)?;
                match tree.get(path) {
                    None => Err(libc::ENOENT),
                    Some(Node::Dir) => Err(libc::EISDIR),
                    Some(Node::File(_)) => {
                        self.objects.remove(path);
                        Ok(())
                    }
                }
            }
            Op::Mkdir { path } => {
                self.parent_is_dir(&tree, path)?;
                if tree.contains_key(path) {
                    return Err(libc::EEXIST);
                }
                self.local_dirs.insert(path.clone());
                Ok(())
            }
            Op::Rename { from, to } => {
                self.parent_is_dir(&tree, from)?;
                self.parent_is_dir(&tree, to)?;
                let src = tree.get(from).cloned().ok_or(libc::ENOENT)?;
                if from == to {
                    return Ok(());
                }
                let below = |p: &str, dir: &str| p.starts_with(&format!("{dir}/"));
                if src == Node::Dir && below(to, from) {
                    return Err(libc::EINVAL);
                }
                let local_only = self.local_dirs.contains(from) && !self.objects.keys().any(|k| below(k, from));
                let mut replaced_local = false;
                match (&src, tree.get(to)) {
                    (_, None) => {}
                    (Node::File(_), Some(Node::Dir)) => return Err(libc::EISDIR),
                    (Node::Dir, Some(Node::File(_))) => return Err(libc::ENOTDIR),
                    (Node::File(_), Some(Node::File(_))) => return Err(libc::EPERM),
                    (Node::Dir, Some(Node::Dir)) => {
                        let empty_local = self.local_dirs.contains(to)
                            && !self.objects.keys().any(|k| below(k, to))
                            && !self.local_dirs.iter().any(|d| below(d, to));
                        if !empty_local {
                            return Err(libc::ENOTEMPTY);
                        }
                        replaced_local = true;
                    }
                }
                if src == Node::Dir && !local_only && self.local_dirs.iter().any(|d| below(d, from)) {
                    return Err(libc::EBUSY);
                }
                if replaced_local {
                    self.local_dirs.remove(to);
                }
                match src {
                    Node::File(data) => {
                        self.objects.remove(from);
                        self.objects.insert(to.clone(), data);
                    }
                    Node::Dir => {
                        let moved: Vec<String> = self.objects.keys().filter(|k| below(k, from)).cloned().collect();
                        for key in moved {
                            let data = self.objects.remove(&key).expect("listed");
                            self.objects.insert(format!("{to}{}", &key[from.len()..]), data);
                        }
                        let dirs: Vec<String> =
                            self.local_dirs.iter().filter(|d| *d == from || below(d, from)).cloned().collect();
                        for d in dirs {
                            self.local_dirs.remove(&d);
                            self.local_dirs.insert(format!("{to}{}", &d[from.len()..]));
                        }
                    }
                }
                Ok(())
            }
            Op::RemotePut { key, len, seed } => {
                self.objects.insert(key.clone(), pattern(*len, u64::from(*seed)));
                Ok(())
            }
            Op::RemoteDelete { key } => {
                self.objects.remove(key);
                Ok(())
            }
        }
    }
}

struct Harness {
    client: Arc<InMemoryClient>,
    fs: S3Filesystem,
}

impl Harness {
    fn new() -> Self {
        let client = Arc::new(InMemoryClient::new("bucket"));
        let config = FsConfig { allow_delete: true, allow_rename: true, write_part_size: 1000, ..FsConfig::default() };
        let fs = S3Filesystem::new(client.clone(), config);
        Harness { client, fs }
    }

    async fn dir_of(&self, path: &str) -> Result<(u64, String), i32> {
        let mut ino = S3Filesystem::root();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            let e = self.fs.lookup(ino, OsStr::new(part)).await.map_err(|e| e.errno())?;
            if e.attr.kind != InodeKind::Directory {
                return Err(libc::ENOTDIR);
            }
            ino = e.attr.ino;
        }
        Ok((ino, parts[parts.len() - 1].to_string()))
    }

    async fn apply(&self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Write { path, len, seed } => {
                let (dir, name) = self.dir_of(path).await?;
                let (_, opened) = self.fs.create(dir, OsStr::new(&name), 0o644, PID).await.map_err(|e| e.errno())?;
                let bytes = pattern(*len, u64::from(*seed));
                for (i, chunk) in bytes.chunks(400).enumerate() {
                    self.fs.write(opened.fh, (i * 400) as u64, chunk).await.map_err(|e| e.errno())?;
                }
                let closed = self.fs.flush(opened.fh, PID).await.map_err(|e| e.errno());
                self.fs.release(opened.fh).await.map_err(|e| e.errno())?;
                closed
            }
            Op::Unlink { path } => {
                let (dir, name) = self.dir_of(path).await?;
                self.fs.unlink(dir, OsStr::new(&name)).await.map_err(|e| e.errno())
            }
            Op::Mkdir { path } => {
                let (dir, name) = self.dir_of(path).await?;
                self.fs.mkdir(dir, OsStr::new(&name)).await.map(|_| ()).map_err(|e| e.errno())
            }
            Op::Rename { from, to } => {
                let (dir, name) = self.dir_of(from).await?;
                let (newdir, newname) = self.dir_of(to).await?;
                self.fs.rename(dir, OsStr::new(&name), newdir, OsStr::new(&newname), 0).await.map_err(|e| e.errno())
            }
            Op::RemotePut { key, len, seed } => {
                self.client.insert(key, pattern(*len, u64::from(*seed)));
                Ok(())
            }
            Op::RemoteDelete { key } => {
                self.client.remove(key);
                Ok(())
            }
        }
    }

    /// The tree the file system shows, walked with readdirplus, files read in full.
    async fn tree(&self) -> BTreeMap<String, Node> {
        let mut tree = BTreeMap::new();
        let mut pending = vec![(S3Filesystem::root(), String::new())];
        while let Some((ino, path)) = pending.pop() {
            let fh = self.fs.opendir(ino).await.unwrap();
            let mut entries = vec![];
            self.fs
                .readdirplus(fh, 0, |e| {
                    if e.name != "." && e.name != ".." {
                        entries.push((e.name.to_string(), e.entry.attr.ino, e.entry.attr.kind));
                    }
                    false
                })
                .await
                .unwrap();
            self.fs.releasedir(fh).unwrap();
            for (name, child, kind) in entries {
                let child_path = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
                // What a lookup says must agree with the listing.
                let looked_up = self.fs.lookup(ino, OsStr::new(&name)).await.unwrap();
                assert_eq!(looked_up.attr.kind, kind, "{child_path}: lookup and readdir disagree");
                match kind {
                    InodeKind::Directory => {
                        tree.insert(child_path.clone(), Node::Dir);
                        pending.push((child, child_path));
                    }
                    InodeKind::File => {
                        let opened = self.fs.open(looked_up.attr.ino, libc::O_RDONLY, PID).await.unwrap();
                        let bytes = self.fs.read(opened.fh, 0, 1 << 20).await.unwrap();
                        self.fs.release(opened.fh).await.unwrap();
                        assert_eq!(bytes.len() as u64, looked_up.attr.size, "{child_path}: size");
                        tree.insert(child_path, Node::File(bytes.to_vec()));
                    }
                    // Only --posix-metadata makes symlinks; this model runs without it.
                    InodeKind::Symlink => panic!("{child_path}: a symlink without --posix-metadata"),
                }
            }
        }
        tree
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3).prop_map(|v| v.join("/"))
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => path_strategy(),
        1 => path_strategy().prop_map(|p| format!("{p}/")),
        1 => (path_strategy(), prop::sample::select(vec!["/", "/./", "/../"])).prop_map(|(p, s)| format!("{p}{s}x")),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4 => 0usize..5, 1 => 900usize..2600];
    prop_oneof![
        4 => (path_strategy(), len.clone(), any::<u8>()).prop_map(|(path, len, seed)| Op::Write { path, len, seed }),
        2 => path_strategy().prop_map(|path| Op::Unlink { path }),
        2 => path_strategy().prop_map(|path| Op::Mkdir { path }),
        3 => (path_strategy(), path_strategy()).prop_map(|(from, to)| Op::Rename { from, to }),
        3 => (key_strategy(), len, any::<u8>()).prop_map(|(key, len, seed)| Op::RemotePut { key, len, seed }),
        2 => key_strategy().prop_map(|key| Op::RemoteDelete { key }),
    ]
}

fn run(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let harness = Harness::new();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let expected = model.apply(op);
            let got = harness.apply(op).await;
            assert_eq!(got, expected, "step {step}: {op:?}");
            assert_eq!(harness.tree().await, model.tree(), "tree after step {step}: {op:?}");
        }
        assert_eq!(harness.client.pending_uploads(), 0, "no multipart upload left behind");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_file_system_agrees_with_the_model(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run(&ops);
    }
}

#[test]
fn regression_local_directory_shadows_a_remote_file() {
    run(&[Op::Mkdir { path: "a".into() }, Op::RemotePut { key: "a".into(), len: 1, seed: 1 }]);
}

#[test]
fn regression_local_directory_outlives_remote_objects_under_it() {
    run(&[
        Op::Mkdir { path: "b".into() },
        Op::RemotePut { key: "b/a".into(), len: 0, seed: 0 },
        Op::RemoteDelete { key: "b/a".into() },
    ]);
}

#[test]
fn regression_a_remote_directory_holding_a_local_one_stays() {
    run(&[
        Op::RemotePut { key: "c/c".into(), len: 0, seed: 0 },
        Op::Mkdir { path: "c/a".into() },
        Op::Unlink { path: "c/c".into() },
        Op::RemotePut { key: "c".into(), len: 1, seed: 0 },
    ]);
}

#[test]
fn regression_file_and_directory_of_one_name() {
    run(&[
        Op::RemotePut { key: "a".into(), len: 2, seed: 1 },
        Op::RemotePut { key: "a/b".into(), len: 2, seed: 2 },
        Op::Unlink { path: "a".into() },
        Op::RemoteDelete { key: "a/b".into() },
        Op::Unlink { path: "a".into() },
    ]);
}
