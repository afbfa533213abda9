//! The core's boundary, checked: nothing under `src/fs/` may use fuser, the AWS SDK or clap,
//! so the file-system core builds and is tested without a kernel, a network or a command line.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_imports_no_fuser_aws_or_clap() {
    let mut files = vec![];
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fs"), &mut files);
    assert!(files.len() >= 5, "found the core's files");
    let forbidden = ["fuser", "aws_sdk_s3", "aws_config", "aws_smithy", "clap"];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in forbidden {
                let used = code.contains(&format!("{name}::")) || code.contains(&format!("use {name}"));
                assert!(!used, "{}:{}: the core must not use {name}: {line}", file.display(), n + 1);
            }
        }
    }
}
