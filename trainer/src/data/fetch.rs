//! `trainer fetch k49`: downloads the official Kuzushiji-49 files, resumably (HTTP Range onto
//! `<file>.part`), with retries and a progress bar, and accepts a file only if its md5 matches.
//! Files already present and valid are left alone; a bad download never replaces a good file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

pub const K49_BASE_URL: &str = "http://codh.rois.ac.jp/kmnist/dataset/k49/";

/// One file to fetch and the md5 it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    /// Expected size, for the progress bar and to spot an over-long `.part`.
    pub bytes: Option<u64>,
    pub md5: String,
}

/// The four official files (md5 from CODH, recorded in `fixtures/k49/README.md`).
pub fn k49_files() -> Vec<RemoteFile> {
    [
        ("k49-train-imgs.npz", 66_117_696, "7ac088b20481cf51dcd01ceaab89d821"),
        ("k49-train-labels.npz", 164_485, "44a8e1b893f81e63ff38d73cad420f7a"),
        ("k49-test-imgs.npz", 10_971_201, "d352e201d846ce6b94f42c990966f374"),
        ("k49-test-labels.npz", 27_450, "4da6f7a62e67a832d5eb1bd85c5ee448"),
    ]
    .into_iter()
    .map(|(name, bytes, md5)| RemoteFile { name: name.into(), bytes: Some(bytes), md5: md5.into() })
    .collect()
}

#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Ends with '/'; file names are appended.
    pub base_url: String,
    pub dir: PathBuf,
    /// Attempts per file after the first, each resuming where the last stopped.
    pub retries: u32,
    pub retry_delay: Duration,
    pub progress: bool,
}

impl FetchOptions {
    pub fn new(base_url: &str, dir: impl Into<PathBuf>) -> FetchOptions {
        let mut base_url = base_url.to_string();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        FetchOptions { base_url, dir: dir.into(), retries: 4, retry_delay: Duration::from_secs(2), progress: true }
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    AlreadyValid,
    Downloaded,
}

/// Fetches every file; stops at the first one that cannot be made valid.
pub fn fetch_all(files: &[RemoteFile], opts: &FetchOptions) -> Result<Vec<(PathBuf, Fetched)>> {
    std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    files.iter().map(|f| fetch_one(&agent, f, opts)).collect()
}

pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn fetch_one(agent: &ureq::Agent, file: &RemoteFile, opts: &FetchOptions) -> Result<(PathBuf, Fetched)> {
    let dest = opts.dir.join(&file.name);
    if dest.exists() {
        let got = md5_file(&dest)?;
        if got == file.md5 {
            return Ok((dest, Fetched::AlreadyValid));
        }
        // Not ours to delete: it may be a newer release or the user's own file.
        bail!(
            "{} exists but its md5 is {got}, expected {}; move it away to download again",
            dest.display(),
            file.md5
        );
    }
    let part = opts.dir.join(format!("{}.part", file.name));
    let url = format!("{}{}", opts.base_url, file.name);
    let mut attempt = 0;
    loop {
        match download_to_part(agent, &url, &part, file, opts.progress) {
            Ok(()) => break,
            Err(e) if attempt < opts.retries && e.retryable => {
                attempt += 1;
                eprintln!("{}: {:#}; retry {attempt}/{} (resuming)", file.name, e.error, opts.retries);
                std::thread::sleep(opts.retry_delay * attempt);
            }
            Err(e) => return Err(e.error.context(format!("downloading {url}"))),
        }
    }
    let got = md5_file(&part)?;
    if got != file.md5 {
        // The partial file is known bad (e.g. a resume onto changed content): start clean next time.
        std::fs::remove_file(&part)?;
        bail!("{}: md5 mismatch after download: got {got}, expected {}", file.name, file.md5);
    }
    std::fs::rename(&part, &dest)?;
    Ok((dest, Fetched::Downloaded))
}

struct DownloadError {
    error: anyhow::Error,
    retryable: bool,
}

fn retryable(error: impl Into<anyhow::Error>) -> DownloadError {
    DownloadError { error: error.into(), retryable: true }
}

fn fatal(error: anyhow::Error) -> DownloadError {
    DownloadError { error, retryable: false }
}

/// Appends the rest of `url` to `part` (Range from its current length).
fn download_to_part(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    file: &RemoteFile,
    progress: bool,
) -> Result<(), DownloadError> {
    let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if file.bytes.is_some_and(|total| have > total) {
        std::fs::remove_file(part).map_err(retryable)?;
        have = 0;
    }
    let mut req = agent.get(url).header("Accept-Encoding", "identity");
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req.call().map_err(retryable)?;
    let status = resp.status().as_u16();
    let append = match status {
        206 => true,
        // The server ignored the Range header: start over.
        200 => false,
        // Range past the end: the part is already whole; the md5 check decides.
        416 if have > 0 => return Ok(()),
        500..=599 | 408 | 429 => return Err(retryable(anyhow::anyhow!("HTTP {status}"))),
        _ => return Err(fatal(anyhow::anyhow!("HTTP {status}"))),
    };
    let mut out = if append {
        OpenOptions::new().append(true).open(part).map_err(retryable)?
    } else {
        have = 0;
        File::create(part).map_err(retryable)?
    };
    let bar = if progress {
        let bar = ProgressBar::new(file.bytes.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(file.name.clone());
        bar.set_position(have);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(retryable)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(retryable)?;
        bar.inc(n as u64);
    }
    out.flush().map_err(retryable)?;
    bar.finish();
    if let Some(total) = file.bytes {
        let got = std::fs::metadata(part).map_err(retryable)?.len();
        if got < total {
            return Err(retryable(anyhow::anyhow!("connection closed at {got} of {total} bytes")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use ndarray::Array3;

    use super::*;
    use crate::data::{Split, npz};

    /// A loopback HTTP/1.1 server serving `files`, honouring `Range: bytes=N-`. The first
    /// `cut_first` responses for a name are cut after that many body bytes (a dropped connection).
    #[derive(Default)]
    struct Server {
        files: HashMap<String, Vec<u8>>,
        cut_first: HashMap<String, (usize, usize)>,
        /// (path, Range header) of every request.
        log: Vec<(String, Option<String>)>,
    }

    fn serve(server: Server) -> (String, Arc<Mutex<Server>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/k49/", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(server));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let state = shared.clone();
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        (url, state)
    }

    fn handle(mut stream: TcpStream, state: &Mutex<Server>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut range = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("range")
            {
                range = Some(v.trim().to_string());
            }
        }
        let name = path.rsplit('/').next().unwrap().to_string();
        let (body, cut) = {
            let mut s = state.lock().unwrap();
            s.log.push((path.clone(), range.clone()));
            let body = s.files.get(&name).cloned();
            let cut = match s.cut_first.get_mut(&name) {
                Some((times, at)) if *times > 0 => {
                    *times -= 1;
                    Some(*at)
                }
                _ => None,
            };
            (body, cut)
        };
        let Some(body) = body else {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if start >= body.len() && start > 0 {
            let _ = stream.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        let status = if start > 0 { "206 Partial Content" } else { "200 OK" };
        let rest = &body[start..];
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            rest.len(),
            body.len() - 1,
            body.len()
        );
        let _ = stream.write_all(header.as_bytes());
        let send = cut.map_or(rest, |at| &rest[..at.min(rest.len())]);
        let _ = stream.write_all(send);
        let _ = stream.flush();
        // Dropping the stream closes the connection, mid-body when cut.
    }

    /// A small K49-layout pair (prefix "k49", test split) as bytes, with its md5 table.
    fn generated_pair() -> (HashMap<String, Vec<u8>>, Vec<RemoteFile>) {
        // Tests run in parallel: each call gets its own scratch directory.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kana-fetch-src-{}-{call}", std::process::id()));
        let images = Array3::from_shape_fn((40, 28, 28), |(i, y, x)| ((i * 7 + y * 3 + x * 5) % 256) as u8);
        let labels: Vec<u8> = (0..40).map(|i| (i % 49) as u8).collect();
        npz::write_pair(&dir, "k49", Split::Test, &images, &labels).unwrap();
        let mut files = HashMap::new();
        let mut table = Vec::new();
        for name in ["k49-test-imgs.npz", "k49-test-labels.npz"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            table.push(RemoteFile {
                name: name.into(),
                bytes: Some(bytes.len() as u64),
                md5: hex::encode(Md5::digest(&bytes)),
            });
            files.insert(name.to_string(), bytes);
        }
        std::fs::remove_dir_all(dir).unwrap();
        (files, table)
    }

    fn options(url: &str, tag: &str) -> FetchOptions {
        let dir = std::env::temp_dir().join(format!("kana-fetch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut o = FetchOptions::new(url, dir);
        o.retry_delay = Duration::from_millis(10);
        o.progress = false;
        o
    }

    #[test]
    fn downloads_verifies_and_skips_valid_files() {
        let (files, table) = generated_pair();
        let (url, state) = serve(Server { files, ..Default::default() });
        let opts = options(&url, "fresh");
        let got = fetch_all(&table, &opts).unwrap();
        assert!(got.iter().all(|(_, f)| *f == Fetched::Downloaded));
        let (images, labels) = npz::read_pair(&opts.dir, "k49", Split::Test).unwrap();
        assert_eq!((images.dim().0, labels.len()), (40, 40));
        assert!(!opts.dir.join("k49-test-imgs.npz.part").exists());

        let requests = state.lock().unwrap().log.len();
        let again = fetch_all(&table, &opts).unwrap();
        assert!(again.iter().all(|(_, f)| *f == Fetched::AlreadyValid));
        assert_eq!(state.lock().unwrap().log.len(), requests, "valid files are not downloaded again");
        std::fs::remove_dir_all(&opts.dir).unwrap();
    }

    #[test]
    fn resumes_an_interrupted_download_with_range() {
        let (files, table) = generated_pair();
        let cut = HashMap::from([("k49-test-imgs.npz".to_string(), (1, 500))]);
        let (url, state) = serve(Server { files: files.clone(), cut_first: cut, ..Default::default() });
        let opts = options(&url, "resume");
        // A .part left by an earlier, killed run of the labels file resumes too.
        std::fs::create_dir_all(&opts.dir).unwrap();
        std::fs::write(opts.dir.join("k49-test-labels.npz.part"), &files["k49-test-labels.npz"][..50]).unwrap();

        fetch_all(&table, &opts).unwrap();
        for f in &table {
            assert_eq!(std::fs::read(opts.dir.join(&f.name)).unwrap(), files[&f.name]);
        }
        let log = state.lock().unwrap().log.clone();
        assert!(log.iter().any(|(p, r)| p.ends_with("k49-test-imgs.npz") && r.as_deref() == Some("bytes=500-")), "{log:?}");
        assert!(log.iter().any(|(p, r)| p.ends_with("k49-test-labels.npz") && r.as_deref() == Some("bytes=50-")), "{log:?}");
        std::fs::remove_dir_all(&opts.dir).unwrap();
    }

    #[test]
    fn a_corrupted_file_is_an_error_that_keeps_valid_files() {
        let (mut files, table) = generated_pair();
        let (url_ok, _) = serve(Server { files: files.clone(), ..Default::default() });
        let opts = options(&url_ok, "corrupt");
        fetch_all(&table[1..], &opts).unwrap(); // the labels file is valid and present

        files.get_mut("k49-test-imgs.npz").unwrap()[300] ^= 0xff;
        let (url_bad, _) = serve(Server { files, ..Default::default() });
        let mut bad = opts.clone();
        bad.base_url = url_bad;
        let err = fetch_all(&table, &bad).unwrap_err();
        assert!(format!("{err:#}").contains("md5 mismatch"), "{err:#}");
        assert!(!opts.dir.join("k49-test-imgs.npz").exists());
        assert!(!opts.dir.join("k49-test-imgs.npz.part").exists());
        assert_eq!(md5_file(&opts.dir.join("k49-test-labels.npz")).unwrap(), table[1].md5);

        // A wrong file already in place is reported, not deleted.
        std::fs::write(opts.dir.join("k49-test-imgs.npz"), b"not the dataset").unwrap();
        let err = fetch_all(&table, &opts).unwrap_err();
        assert!(err.to_string().contains("move it away"), "{err}");
        assert_eq!(std::fs::read(opts.dir.join("k49-test-imgs.npz")).unwrap(), b"not the dataset");
        std::fs::remove_dir_all(&opts.dir).unwrap();
    }

    #[test]
    fn missing_files_fail_without_retrying_forever() {
        let (url, state) = serve(Server::default());
        let opts = options(&url, "missing");
        let err = fetch_all(&k49_files()[..1], &opts).unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 404"), "{err:#}");
        assert_eq!(state.lock().unwrap().log.len(), 1);
    }
}
