//! The raw baseline: each workload's S3 traffic done by aws-sdk-s3 alone, in a child process
//! (this same binary, re-run with [`CHILD_FLAG`]), so its CPU time and peak RSS are read from
//! `/proc` exactly as the daemon's are. It is what a well-written application could get from the
//! SDK on this machine and server, with no file system in between:
//! - sequential: each object in order, `window` ranged GETs of `part` bytes in flight, each
//!   part held until the reader reaches it (what a prefetcher does);
//! - random: one ranged GET per read, one at a time, at the offsets the mount-side reader uses;
//! - first byte: one GET of `bytes=0-0`, one at a time;
//! - whole objects: one plain GET per object, `concurrency` at a time;
//! - upload: new objects from a local source file, one after another, as mount-s3 writes them:
//!   the file read in `part`-byte pieces, each sent as an UploadPart with its CRC32C while the
//!   next is read, `window` parts in flight, completed with `If-None-Match: *`; an object
//!   smaller than one part is one PutObject (CRC32C, `If-None-Match: *`), read from the file
//!   each time as `cp` does;
//! - listing: ListObjectsV2 of a prefix with delimiter `/`, 1,000 keys a page, page after page.
//!
//! The child builds its client from explicit static credentials and region (taken from its
//! sealed environment), talks to the local endpoint only, and every loop is bounded.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::AggregatedBytes;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Buf;
use futures::{StreamExt, TryStreamExt};
use mount_s3::client::memory::crc32c_base64;

use crate::measure::{Run, Snapshot, machine_cpu_seconds, machine_jiffies, peak_rss_kib, process_cpu_seconds};
use crate::procs::run_one;
use crate::server::Server;
use crate::workloads::{RandomReads, write_keys};

/// The argument that turns this binary into the raw-SDK child.
pub const CHILD_FLAG: &str = "--raw-child";
const RESULT_PREFIX: &str = "RAW-RESULT";

/// A raw-SDK workload.
#[derive(Clone, Debug, PartialEq)]
pub enum RawSpec {
    /// Objects `(key, size)` read concurrently, each in order by `window` ranged GETs of `part`.
    Sequential { objects: Vec<(String, u64)>, part: u64, window: usize },
    /// One ranged GET per read.
    Random(RandomReads),
    /// `samples` GETs of the first byte of `key`, one at a time.
    FirstByte { key: String, samples: usize },
    /// One GET per object, `concurrency` at a time.
    WholeObjects { objects: Vec<(String, u64)>, concurrency: usize },
    /// `files` new objects under `prefix/raw/`, one after another, each the `size`-byte local
    /// file `source`: a multipart upload of `part`-byte parts (`window` in flight), or one
    /// PutObject if smaller than a part.
    Upload { source: String, size: u64, files: u64, prefix: String, part: u64, window: usize },
    /// Every page of ListObjectsV2 under `prefix` (delimiter `/`), which must hold `count` keys.
    List { prefix: String, count: u64 },
}

impl RawSpec {
    /// The child's command-line form (also the key under which results are reused).
    pub fn to_args(&self) -> Vec<String> {
        let objects = |list: &[(String, u64)]| list.iter().map(|(k, s)| format!("object={s}:{k}")).collect::<Vec<_>>();
        match self {
            RawSpec::Sequential { objects: list, part, window } => {
                let mut args = vec!["sequential".into(), format!("part={part}"), format!("window={window}")];
                args.extend(objects(list));
                args
            }
            RawSpec::Random(r) => vec![
                "random".into(),
                format!("object={}:{}", r.size, r.key),
                format!("block={}", r.block),
                format!("millis={}", r.duration.as_millis()),
                format!("max_reads={}", r.max_reads),
                format!("seed={}", r.seed),
            ],
            RawSpec::FirstByte { key, samples } => {
                vec!["first_byte".into(), format!("object=1:{key}"), format!("samples={samples}")]
            }
            RawSpec::WholeObjects { objects: list, concurrency } => {
                let mut args = vec!["whole_objects".into(), format!("concurrency={concurrency}")];
                args.extend(objects(list));
                args
            }
            RawSpec::Upload { source, size, files, prefix, part, window } => vec![
                "upload".into(),
                format!("size={size}"),
                format!("files={files}"),
                format!("part={part}"),
                format!("window={window}"),
                format!("prefix={prefix}"),
                format!("source={source}"),
            ],
            RawSpec::List { prefix, count } => {
                vec!["list".into(), format!("prefix={prefix}"), format!("count={count}")]
            }
        }
    }

    /// Parses [`RawSpec::to_args`].
    pub fn from_args(args: &[String]) -> Result<RawSpec, String> {
        let (kind, rest) = args.split_first().ok_or("no raw workload")?;
        let mut objects = Vec::new();
        let mut numbers = std::collections::HashMap::new();
        let mut strings = std::collections::HashMap::new();
        for arg in rest {
            let (name, value) = arg.split_once('=').ok_or_else(|| format!("bad argument {arg:?}"))?;
            if name == "source" || name == "prefix" {
                strings.insert(name.to_string(), value.to_string());
            } else if name == "object" {
                let (size, key) = value.split_once(':').ok_or_else(|| format!("bad object {value:?}"))?;
                objects.push((key.to_string(), size.parse::<u64>().map_err(|e| format!("{arg}: {e}"))?));
            } else {
                numbers.insert(name.to_string(), value.parse::<u64>().map_err(|e| format!("{arg}: {e}"))?);
            }
        }
        let number = |name: &str| numbers.get(name).copied().ok_or_else(|| format!("{kind}: no {name}="));
        let first = || objects.first().cloned().ok_or_else(|| format!("{kind}: no object="));
        let string = |name: &str| strings.get(name).cloned().ok_or_else(|| format!("{kind}: no {name}="));
        Ok(match kind.as_str() {
            "sequential" => RawSpec::Sequential { part: number("part")?, window: number("window")? as usize, objects },
            "random" => {
                let (key, size) = first()?;
                RawSpec::Random(RandomReads {
                    key,
                    size,
                    block: number("block")?,
                    duration: Duration::from_millis(number("millis")?),
                    max_reads: number("max_reads")?,
                    seed: number("seed")?,
                })
            }
            "first_byte" => RawSpec::FirstByte { key: first()?.0, samples: number("samples")? as usize },
            "whole_objects" => RawSpec::WholeObjects { concurrency: number("concurrency")? as usize, objects },
            "upload" => RawSpec::Upload {
                source: string("source")?,
                size: number("size")?,
                files: number("files")?,
                prefix: string("prefix")?,
                part: number("part")?,
                window: number("window")? as usize,
            },
            "list" => RawSpec::List { prefix: string("prefix")?, count: number("count")? },
            other => return Err(format!("unknown raw workload {other:?}")),
        })
    }
}

/// Runs `spec` in a child process against `s3` and measures it; `timeout` bounds the child.
pub fn run(s3: &Server, spec: &RawSpec, timeout: Duration) -> Run {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = std::process::Command::new(exe);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).envs(s3.env_vars());
    command.arg(CHILD_FLAG).arg(s3.endpoint()).arg(s3.bucket()).args(spec.to_args());
    s3.reset_counts();
    let before = Snapshot::take(None, s3);
    let result = run_one(command, timeout);
    let after = Snapshot::take(None, s3);
    let mut run = match result.and_then(|f| parse_result(&f.stdout)) {
        Ok(run) => run,
        Err(e) => Run { error: Some(format!("raw child: {e}")), ..Run::default() },
    };
    // The child timed its own workload (without its start-up): keep its machine reading.
    let machine_cpu_s = run.machine_cpu_s;
    run.set_costs(&before, &after, false, s3.in_process());
    if run.error.is_none() {
        run.machine_cpu_s = machine_cpu_s;
    }
    run.requests = s3.request_counts();
    run
}

fn parse_result(stdout: &str) -> Result<Run, String> {
    let line = stdout.lines().find(|l| l.starts_with(RESULT_PREFIX)).ok_or("no result line")?;
    let mut run = Run::default();
    for field in line.split_whitespace().skip(1) {
        let (name, value) = field.split_once('=').ok_or_else(|| format!("bad field {field:?}"))?;
        let int = || value.parse::<u64>().map_err(|e| format!("{field}: {e}"));
        match name {
            "bytes" => run.bytes = int()?,
            "ops" => run.ops = int()?,
            "wall_ns" => run.wall = Duration::from_nanos(int()?),
            "cpu_s" => run.client_cpu_s = value.parse().map_err(|e| format!("{field}: {e}"))?,
            "machine_s" => run.machine_cpu_s = value.parse().map_err(|e| format!("{field}: {e}"))?,
            "peak_kib" => run.client_peak_kib = int()?,
            "lat_ns" => {
                run.latencies = value
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| v.parse().map(Duration::from_nanos).map_err(|e| format!("{field}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            _ => {}
        }
    }
    Ok(run)
}

/// The child's `main`: `CHILD_FLAG ENDPOINT BUCKET SPEC...`. Prints one result line and exits.
pub fn child_main(args: &[String]) -> ! {
    let [endpoint, bucket, spec @ ..] = args else { panic!("usage: {CHILD_FLAG} ENDPOINT BUCKET SPEC...") };
    let spec = RawSpec::from_args(spec).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = raw_client(endpoint);
    let cpu_before = process_cpu_seconds("self").unwrap_or(0.0);
    let machine_before = machine_jiffies();
    let start = Instant::now();
    let outcome = runtime.block_on(work(&client, bucket, &spec));
    let wall = start.elapsed();
    let machine = machine_cpu_seconds(machine_before, machine_jiffies());
    let cpu = process_cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let (bytes, ops, latencies) = outcome.unwrap_or_else(|e| panic!("raw workload failed: {e}"));
    let lat: Vec<String> = latencies.iter().map(|d| d.as_nanos().to_string()).collect();
    println!(
        "{RESULT_PREFIX} bytes={bytes} ops={ops} wall_ns={} cpu_s={cpu:.3} machine_s={machine:.3} peak_kib={} lat_ns={}",
        wall.as_nanos(),
        peak_rss_kib("self").unwrap_or(0),
        lat.join(",")
    );
    std::process::exit(0)
}

/// An SDK client for the local endpoint with explicit static credentials and region, and the
/// same checksum settings as mount-s3's own client (none unless an operation requires one).
fn raw_client(endpoint: &str) -> aws_sdk_s3::Client {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let credentials = Credentials::new(var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"), None, None, "raw");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(var("AWS_REGION")))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

type Outcome = Result<(u64, u64, Vec<Duration>), String>;

async fn work(client: &aws_sdk_s3::Client, bucket: &str, spec: &RawSpec) -> Outcome {
    match spec {
        RawSpec::Sequential { objects, part, window } => {
            let readers = objects.iter().map(|(key, size)| read_in_order(client, bucket, key, *size, *part, *window));
            let totals = futures::future::try_join_all(readers).await?;
            Ok((totals.iter().sum(), objects.len() as u64, vec![]))
        }
        RawSpec::Random(reads) => {
            let start = Instant::now();
            let (mut bytes, mut ops) = (0, 0);
            for offset in reads.offsets() {
                if start.elapsed() >= reads.duration {
                    break;
                }
                bytes += get(client, bucket, &reads.key, Some((offset, reads.block))).await?.remaining() as u64;
                ops += 1;
            }
            Ok((bytes, ops, vec![]))
        }
        RawSpec::FirstByte { key, samples } => {
            let mut latencies = Vec::with_capacity(*samples);
            for _ in 0..*samples {
                let start = Instant::now();
                get(client, bucket, key, Some((0, 1))).await?;
                latencies.push(start.elapsed());
            }
            Ok((*samples as u64, *samples as u64, latencies))
        }
        RawSpec::WholeObjects { objects, concurrency } => {
            let gets = futures::stream::iter(objects.iter().map(|(key, size)| async move {
                let body = get(client, bucket, key, None).await?;
                match body.remaining() as u64 == *size {
                    true => Ok(*size),
                    false => Err(format!("{key}: {} bytes, expected {size}", body.remaining())),
                }
            }));
            let sizes: Vec<u64> = gets.buffer_unordered(*concurrency).try_collect().await?;
            Ok((sizes.iter().sum(), sizes.len() as u64, vec![]))
        }
        RawSpec::Upload { source, size, files, prefix, part, window } => {
            for key in write_keys(&format!("{prefix}/raw"), 0, *files) {
                let sent = if size < part {
                    put_file(client, bucket, &key, source).await?
                } else {
                    multipart_upload(client, bucket, &key, source, *part, *window).await?
                };
                if sent != *size {
                    return Err(format!("{key}: sent {sent} bytes, expected {size}"));
                }
            }
            Ok((size * files, *files, vec![]))
        }
        RawSpec::List { prefix, count } => {
            let listed = list_all(client, bucket, prefix).await?;
            if listed != *count {
                return Err(format!("listed {listed} keys under {prefix}, expected {count}"));
            }
            Ok((0, listed, vec![]))
        }
    }
}

/// Lists every page under `prefix` (delimiter `/`), one after another; returns the keys seen.
async fn list_all(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<u64, String> {
    let (mut token, mut keys) = (None, 0u64);
    for _ in 0..1_000_000 {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .max_keys(1000)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| sdk_error("ListObjectsV2", prefix, e))?;
        keys += page.contents().len() as u64;
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(keys);
        }
    }
    Err(format!("{prefix}: more than a million pages"))
}

fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    what: &str,
    key: &str,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    format!("{what} {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
}

/// One PutObject of the whole file (read afresh, as `cp` does), with its CRC32C and
/// `If-None-Match: *`. Returns the bytes sent.
async fn put_file(client: &aws_sdk_s3::Client, bucket: &str, key: &str, source: &str) -> Result<u64, String> {
    let body = bytes::Bytes::from(std::fs::read(source).map_err(|e| format!("read {source}: {e}"))?);
    let len = body.len() as u64;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_length(len as i64)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .checksum_crc32_c(crc32c_base64(&body))
        .if_none_match("*")
        .body(body.into())
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| sdk_error("PUT", key, e))?;
    Ok(len)
}

/// A multipart upload of the file: `part`-byte pieces read in order, each sent with its CRC32C
/// while the next is read, at most `window` in flight. Returns the bytes sent.
async fn multipart_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    source: &str,
    part: u64,
    window: usize,
) -> Result<u64, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(source).map_err(|e| format!("open {source}: {e}"))?;
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .send()
        .await
        .map_err(|e| sdk_error("CreateMultipartUpload", key, e))?;
    let upload_id = created.upload_id().ok_or("no upload id")?.to_string();
    let mut in_flight = std::collections::VecDeque::new();
    let mut done = Vec::new();
    let mut sent = 0;
    for number in 1.. {
        let mut buf = bytes::BytesMut::zeroed(part as usize);
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]).map_err(|e| format!("read {source}: {e}"))? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        sent += filled as u64;
        if in_flight.len() >= window.max(1) {
            let oldest: tokio::task::JoinHandle<Result<CompletedPart, String>> =
                in_flight.pop_front().expect("non-empty");
            done.push(oldest.await.map_err(|e| format!("part task: {e}"))??);
        }
        let (client, bucket, key, upload_id) = (client.clone(), bucket.to_string(), key.to_string(), upload_id.clone());
        in_flight.push_back(tokio::spawn(async move {
            let body = buf.freeze();
            let checksum = crc32c_base64(&body);
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(body.len() as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .checksum_crc32_c(checksum.clone())
                .body(body.into())
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| sdk_error("UploadPart", &key, e))?;
            if out.checksum_crc32_c().is_some_and(|theirs| theirs != checksum) {
                return Err(format!("part {number} of {key}: checksum mismatch"));
            }
            let etag = out.e_tag().ok_or("UploadPart: no ETag")?;
            Ok(CompletedPart::builder().part_number(number).e_tag(etag).checksum_crc32_c(checksum).build())
        }));
    }
    for task in in_flight {
        done.push(task.await.map_err(|e| format!("part task: {e}"))??);
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .if_none_match("*")
        .send()
        .await
        .map_err(|e| sdk_error("CompleteMultipartUpload", key, e))?;
    Ok(sent)
}

/// Reads one object in order: `window` part GETs in flight, parts handed over in order.
async fn read_in_order(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    part: u64,
    window: usize,
) -> Result<u64, String> {
    let parts = (0..size).step_by(part as usize).map(|start| (start, part.min(size - start)));
    let mut in_order = futures::stream::iter(parts).map(|range| get(client, bucket, key, Some(range))).buffered(window);
    let mut total = 0;
    while let Some(body) = in_order.next().await {
        total += body?.remaining() as u64;
    }
    Ok(total)
}

/// One GET (of `(offset, len)`, or the whole object), its body collected; checks the length.
/// The caller drops the body when it has "consumed" it.
async fn get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<(u64, u64)>,
) -> Result<AggregatedBytes, String> {
    let mut request = client.get_object().bucket(bucket).key(key);
    if let Some((offset, len)) = range {
        request = request.range(format!("bytes={offset}-{}", offset + len - 1));
    }
    let out = request.send().await.map_err(|e| format!("GET {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let expected = out.content_length().unwrap_or(-1);
    // Kept as the chunks that arrived: no copy into one buffer.
    let body = out.body.collect().await.map_err(|e| format!("GET {key} body: {e}"))?;
    let got = body.remaining();
    if got as i64 != expected || range.is_some_and(|(_, len)| got as u64 != len) {
        return Err(format!("GET {key} {range:?}: {got} bytes, Content-Length {expected}"));
    }
    Ok(body)
}
