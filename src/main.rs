//! `mount-s3`: mount an S3 bucket as a local file system. See README.md.

fn main() -> std::process::ExitCode {
    mount_s3::run::main(std::env::args_os())
}
