//! Pull and push: joins the registry client to the store. Blobs stream from the registry into
//! the store's ingest area, checked against their digests before they enter `blobs/`; pushes
//! send the exact bytes of the store, so digests stay what the user saw locally.

use crate::image::{Descriptor, ImageConfig, Index, Manifest, Platform, Reference, media};
use crate::progress::{Event, Reporter, TransferState};
use crate::registry::{BlobSink, Client, ClientOptions, Fetched, PushOutcome, RegistryError, Repo};
use crate::store::{BlobWriter, IndexEntry, Store, StoreError};
use futures_util::StreamExt as _;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

/// What can go wrong in a pull or push.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The registry side failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store side failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] crate::image::ReferenceError),
    /// The image is not in the store.
    #[error("no image `{0}` in the store (see `wcbuild images`)")]
    NotInStore(String),
    /// The index has no entry for the platform asked for.
    #[error(
        "`{reference}` has no image for {wanted}; it has {}; choose one with --platform",
        available.join(", ")
    )]
    NoPlatform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms it has.
        available: Vec<String>,
    },
    /// The Windows host description (`WCBUILD_HOST_WINDOWS_VERSION`) does not parse.
    #[error(transparent)]
    Host(#[from] super::host::HostError),
    /// A document is not what its media type says.
    #[error("`{what}` is not a valid {kind}: {message}")]
    Invalid {
        /// Where.
        what: String,
        /// Manifest, index, config.
        kind: &'static str,
        /// Why.
        message: String,
    },
}

/// How `pull` chooses and keeps.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform wanted (a Windows version picks that build). Default: the host's; a
    /// Windows host takes the newest entry it can run (`image::compat::choose_for_host`).
    pub platform: Option<Platform>,
    /// Keep the whole index and every platform's image.
    pub all_platforms: bool,
    /// Keep the index and tag it, but fetch only the chosen platform's image (builds do this,
    /// so that other platforms of the same base can be fetched later).
    pub keep_index: bool,
    /// Blobs transferred at once (default 4).
    pub concurrency: usize,
}

/// What `pull` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    /// The full reference tagged.
    pub reference: String,
    /// Digest of what was tagged (manifest or index).
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// The platforms fetched.
    pub platforms: Vec<String>,
    /// Blobs downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Blobs the store had already.
    pub present: usize,
}

/// How `push` behaves.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Upload foreign (non-distributable) layers too; by default they are left out.
    pub include_foreign: bool,
    /// Blobs transferred at once (default 4).
    pub concurrency: usize,
}

/// What `push` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// Where it went.
    pub reference: String,
    /// Digest of the manifest or index pushed (the store's, unless layers kept uncompressed
    /// were compressed on the way, which makes a new manifest).
    pub digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Blobs the repository had.
    pub existed: usize,
    /// Blobs mounted from other repositories.
    pub mounted: usize,
    /// Foreign layers left out.
    pub skipped_foreign: Vec<String>,
}

/// A client for these settings.
pub fn client(opts: ClientOptions) -> Client {
    Client::new(opts)
}

pub use crate::registry::auth::{Credentials, Stored};

/// Checks `creds` against `server`, then stores them as `docker login` does (in the
/// configured credential helper, else in `config.json` under `opts.config_dir`).
pub fn login(
    opts: &ClientOptions,
    server: &str,
    creds: &Credentials,
) -> Result<Stored, TransferError> {
    let mut opts = opts.clone();
    opts.credentials = Some((server.to_string(), creds.clone()));
    let config_dir = opts.config_dir.clone();
    runtime().block_on(Client::new(opts).check_login(server))?;
    Ok(crate::registry::auth::store(&config_dir, server, creds)?)
}

/// Removes the stored credentials for `server` from `config.json` under `config_dir` (or
/// its credential helper). Returns false when there were none.
pub fn logout(config_dir: &Path, server: &str) -> Result<bool, TransferError> {
    Ok(crate::registry::auth::erase(config_dir, server)?)
}

/// Where `config.json` is by default: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn default_config_dir() -> std::path::PathBuf {
    crate::registry::auth::default_config_dir()
}

/// A tokio runtime for the blocking callers (the CLI, builds).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

struct StoreSink<'a> {
    store: &'a Store,
    writer: Option<BlobWriter<'a>>,
}

impl BlobSink for StoreSink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.write_all(buf),
            None => Err(std::io::Error::other("blob writer closed")),
        }
    }
    fn restart(&mut self) -> std::io::Result<()> {
        self.writer = None;
        self.writer = Some(self.store.blob_writer().map_err(std::io::Error::other)?);
        Ok(())
    }
    fn digest(&self) -> Option<String> {
        // The store hashes as it writes; the client checks this instead of hashing again.
        self.writer.as_ref().map(|w| w.digest())
    }
}

fn locations_record(digest: &str) -> Option<std::path::PathBuf> {
    let hex = crate::store::digest_hex(digest).ok()?;
    Some(Path::new("cache").join("locations").join(hex))
}

/// Repositories (`registry/name`) known to hold `digest`, newest first.
fn locations(store: &Store, digest: &str) -> Vec<String> {
    locations_record(digest)
        .and_then(|rel| std::fs::read_to_string(store.root().join(rel)).ok())
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Remembers that `repo` holds these blobs (for mounts on later pushes).
fn remember(store: &Store, repo: &Repo, digests: &BTreeSet<String>) {
    let here = repo.to_string();
    for d in digests {
        let Some(rel) = locations_record(d) else {
            continue;
        };
        let mut list = locations(store, d);
        if list.first() == Some(&here) {
            continue;
        }
        list.retain(|l| *l != here);
        list.insert(0, here.clone());
        list.truncate(8);
        // A hint for mounts, not data: no fsync.
        let _ = store.write_cache_record(&rel, (list.join("\n") + "\n").as_bytes());
    }
}

fn emit(
    reporter: &RefCell<&mut dyn Reporter>,
    action: &'static str,
    kind: &'static str,
    digest: &str,
    done: u64,
    total: u64,
    state: TransferState,
) {
    reporter
        .borrow_mut()
        .event(transfer(action, kind, digest, done, total, state));
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    kind: &'static str,
) -> Result<T, TransferError> {
    serde_json::from_slice(bytes).map_err(|e| TransferError::Invalid {
        what: what.to_string(),
        kind,
        message: e.to_string(),
    })
}

fn describe_platforms(idx: &Index) -> Vec<String> {
    idx.manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect()
}

fn transfer(
    action: &'static str,
    kind: &'static str,
    digest: &str,
    done: u64,
    total: u64,
    state: TransferState,
) -> Event {
    Event::Transfer {
        action,
        digest: digest.to_string(),
        kind,
        done,
        total,
        state,
    }
}

/// Downloads one blob into the store unless it is there. Returns the bytes downloaded.
async fn fetch_blob(
    store: &Store,
    client: &Client,
    repo: &Repo,
    desc: &Descriptor,
    kind: &'static str,
    emit: &(dyn Fn(Event) + Send + Sync),
) -> Result<u64, TransferError> {
    let (d, size) = (desc.digest.as_str(), desc.size);
    if store.blob_size(d)? == Some(size) {
        emit(transfer(
            "pull",
            kind,
            d,
            size,
            size,
            TransferState::Present,
        ));
        return Ok(0);
    }
    emit(transfer("pull", kind, d, 0, size, TransferState::Started));
    let mut sink = StoreSink {
        store,
        writer: Some(store.blob_writer()?),
    };
    let mut last = 0u64;
    let mut progress = |done: u64| {
        if done >= last + (4 << 20) {
            last = done;
            emit(transfer(
                "pull",
                kind,
                d,
                done,
                size,
                TransferState::Progress,
            ));
        }
    };
    client
        .get_blob(repo, desc, &mut sink, &mut progress)
        .await?;
    let writer = sink.writer.take().expect("the sink keeps its writer");
    // The commit waits for the disk (fsync): let the other transfers go on meanwhile.
    let commit = || writer.commit(Some(d), Some(size));
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(commit)?,
        _ => commit()?,
    };
    emit(transfer("pull", kind, d, size, size, TransferState::Done));
    Ok(size)
}

/// Downloads one blob of `repo` into the store (verified) unless it is there; returns the
/// bytes downloaded.
pub async fn fetch_one(
    store: &Store,
    client: &Client,
    repo: &Repo,
    desc: &Descriptor,
) -> Result<u64, TransferError> {
    fetch_blob(store, client, repo, desc, "layer", &|_| {}).await
}

struct Tally {
    downloaded: usize,
    bytes: u64,
    present: usize,
    blobs: BTreeSet<String>,
}

/// Fetches an image manifest's config and layers (in parallel) and stores the manifest.
async fn fetch_image(
    store: &Store,
    client: &Client,
    repo: &Repo,
    manifest: &Fetched,
    concurrency: usize,
    reporter: &RefCell<&mut dyn Reporter>,
    tally: &mut Tally,
) -> Result<ImageConfig, TransferError> {
    let m: Manifest = parse(&manifest.bytes, &manifest.digest, "manifest")?;
    let mut blobs: Vec<(&Descriptor, &'static str)> = vec![(&m.config, "config")];
    blobs.extend(m.layers.iter().map(|l| (l, "layer")));
    // Largest first, so the long transfers overlap the short ones. Each blob is its own task,
    // so hashing and writing spread over the runtime's threads; events come back by channel.
    blobs.sort_by_key(|(d, _)| std::cmp::Reverse(d.size));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (d, kind) in &blobs {
        let (store, client, repo, d, kind) = (
            store.clone(),
            client.clone(),
            repo.clone(),
            (*d).clone(),
            *kind,
        );
        let (tx, permits) = (tx.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let emit = move |e: Event| {
                let _ = tx.send(e);
            };
            fetch_blob(&store, &client, &repo, &d, kind, &emit).await
        });
    }
    drop(tx);
    let mut results: Vec<Result<u64, TransferError>> = Vec::new();
    loop {
        tokio::select! {
            Some(e) = rx.recv() => reporter.borrow_mut().event(e),
            joined = tasks.join_next() => match joined {
                Some(Ok(r)) => {
                    if r.is_err() {
                        tasks.abort_all();
                    }
                    results.push(r);
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
                None => break,
            },
        }
    }
    while let Ok(e) = rx.try_recv() {
        reporter.borrow_mut().event(e);
    }
    for r in results {
        match r? {
            0 => tally.present += 1,
            n => {
                tally.downloaded += 1;
                tally.bytes += n;
            }
        }
    }
    tally.blobs.insert(m.config.digest.clone());
    tally
        .blobs
        .extend(m.layers.iter().map(|l| l.digest.clone()));
    let config: ImageConfig = parse(
        &store.read_blob(&m.config.digest)?,
        &m.config.digest,
        "config",
    )?;
    store.put_blob(&manifest.bytes, Some(&manifest.digest))?;
    tally.blobs.insert(manifest.digest.clone());
    Ok(config)
}

fn platform_matches(wanted: &Platform, have: &Platform) -> bool {
    if !have.same_os_arch(wanted) {
        return false;
    }
    match (wanted.windows_version(), have.windows_version()) {
        (Some(w), Some(h)) => (w.major, w.minor, w.build) == (h.major, h.minor, h.build),
        _ => true,
    }
}

/// Pulls `name` into the store and tags it. For an index: with `all_platforms` the index and
/// every image; with `keep_index` the index and the chosen image; else only the image for the
/// wanted platform, tagged under the name (as `docker pull` does).
pub async fn pull(
    store: &Store,
    client: &Client,
    name: &str,
    opts: &PullOptions,
    reporter: &mut dyn Reporter,
) -> Result<Pulled, TransferError> {
    let reference = Reference::parse(name)?;
    let repo = Repo::of(&reference);
    let tag_or_digest = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let full = reference.to_string();
    let reporter = RefCell::new(reporter);
    let concurrency = if opts.concurrency == 0 {
        4
    } else {
        opts.concurrency
    };
    let top = client.get_manifest(&repo, &tag_or_digest).await?;
    emit(
        &reporter,
        "pull",
        "manifest",
        &top.digest,
        top.bytes.len() as u64,
        top.bytes.len() as u64,
        TransferState::Done,
    );
    let mut tally = Tally {
        downloaded: 0,
        bytes: 0,
        present: 0,
        blobs: BTreeSet::new(),
    };
    // No platform asked for: the host's; a Windows host takes the entry it runs by Microsoft's
    // compatibility rule (image::compat), not only its own build.
    let (wanted, windows_host) = match &opts.platform {
        Some(p) => (p.clone(), None),
        None => (super::host::platform()?, super::host::windows_host()?),
    };
    let mut platforms = Vec::new();
    let tagged: IndexEntry;
    if media::is_index(&top.media_type) {
        let idx: Index = parse(&top.bytes, &full, "index")?;
        let chosen: Vec<usize> = if opts.keep_index && opts.platform.is_none() {
            // The caller chooses later (and fetches with `fetch_manifest`).
            Vec::new()
        } else if opts.all_platforms {
            (0..idx.manifests.len())
                .filter(|&i| media::is_manifest(&idx.manifests[i].media_type))
                .collect()
        } else {
            let candidates: Vec<Option<&Platform>> =
                idx.manifests.iter().map(|m| m.platform.as_ref()).collect();
            let choice = match &windows_host {
                Some(host) => crate::image::compat::choose_for_host(host, &wanted, &candidates),
                None => crate::image::platform::choose(&wanted, &candidates),
            };
            match choice {
                Some(i) => vec![i],
                None => {
                    return Err(TransferError::NoPlatform {
                        reference: full,
                        wanted: match &windows_host {
                            Some(h) => format!(
                                "the {} host {h} under either isolation (see `wcbuild compat`)",
                                h.sku
                            ),
                            None => wanted.to_string(),
                        },
                        available: describe_platforms(&idx),
                    });
                }
            }
        };
        let mut last = None;
        for i in chosen {
            let entry = &idx.manifests[i];
            let child = client.get_manifest(&repo, &entry.digest).await?;
            let config = fetch_image(
                store,
                client,
                &repo,
                &child,
                concurrency,
                &reporter,
                &mut tally,
            )
            .await?;
            platforms.push(
                entry
                    .platform
                    .clone()
                    .unwrap_or_else(|| config.platform())
                    .to_string(),
            );
            last = Some((entry.clone(), child));
        }
        if opts.all_platforms || opts.keep_index {
            store.put_blob(&top.bytes, Some(&top.digest))?;
            tally.blobs.insert(top.digest.clone());
            tagged = IndexEntry::new(&top.media_type, &top.digest, top.bytes.len() as u64);
        } else {
            let (entry, child) = last.expect("one platform was chosen");
            let mut e = IndexEntry::new(&child.media_type, &child.digest, child.bytes.len() as u64);
            e.platform = entry
                .platform
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok());
            tagged = e;
        }
    } else if media::is_manifest(&top.media_type) {
        let config = fetch_image(
            store,
            client,
            &repo,
            &top,
            concurrency,
            &reporter,
            &mut tally,
        )
        .await?;
        let have = config.platform();
        if let Some(w) = &opts.platform
            && !platform_matches(w, &have)
        {
            return Err(TransferError::NoPlatform {
                reference: full,
                wanted: w.to_string(),
                available: vec![have.to_string()],
            });
        }
        platforms.push(have.to_string());
        tagged = IndexEntry::new(&top.media_type, &top.digest, top.bytes.len() as u64);
    } else {
        return Err(TransferError::Invalid {
            what: full,
            kind: "image",
            message: format!("unsupported media type `{}`", top.media_type),
        });
    }
    store.tag(&full, tagged.clone().with_reference(&full))?;
    remember(store, &repo, &tally.blobs);
    Ok(Pulled {
        reference: full,
        digest: tagged.digest,
        media_type: tagged.media_type,
        platforms,
        downloaded: tally.downloaded,
        downloaded_bytes: tally.bytes,
        present: tally.present,
    })
}

/// Fetches the image `digest` of `name`'s repository into the store without tagging it (a
/// platform of a kept index that was not fetched before).
pub async fn fetch_manifest(
    store: &Store,
    client: &Client,
    name: &str,
    digest: &str,
    reporter: &mut dyn Reporter,
) -> Result<(), TransferError> {
    let reference = Reference::parse(name)?;
    let repo = Repo::of(&reference);
    let reporter = RefCell::new(reporter);
    let child = client.get_manifest(&repo, digest).await?;
    let mut tally = Tally {
        downloaded: 0,
        bytes: 0,
        present: 0,
        blobs: BTreeSet::new(),
    };
    fetch_image(store, client, &repo, &child, 4, &reporter, &mut tally).await?;
    remember(store, &repo, &tally.blobs);
    Ok(())
}

#[derive(Default)]
struct PushTally {
    uploaded: usize,
    bytes: u64,
    existed: usize,
    mounted: usize,
    skipped: Vec<String>,
    blobs: BTreeSet<String>,
}

async fn send_blob(
    store: &Store,
    client: &Client,
    repo: &Repo,
    desc: &Descriptor,
    kind: &'static str,
    reporter: &RefCell<&mut dyn Reporter>,
) -> Result<PushOutcome, TransferError> {
    let path = store.blob_path(&desc.digest)?;
    if store.blob_size(&desc.digest)? != Some(desc.size) {
        return Err(TransferError::Store(StoreError::BlobNotFound(
            desc.digest.clone(),
        )));
    }
    let mounts: Vec<String> = locations(store, &desc.digest)
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix(&format!("{}/", repo.registry))
                .map(str::to_string)
        })
        .collect();
    emit(
        reporter,
        "push",
        kind,
        &desc.digest,
        0,
        desc.size,
        TransferState::Started,
    );
    let mut last = 0u64;
    let mut progress = |done: u64| {
        if done >= last + (4 << 20) {
            last = done;
            emit(
                reporter,
                "push",
                kind,
                &desc.digest,
                done,
                desc.size,
                TransferState::Progress,
            );
        }
    };
    let outcome = client
        .push_blob(repo, &desc.digest, desc.size, &path, &mounts, &mut progress)
        .await?;
    let state = match outcome {
        PushOutcome::Existed => TransferState::Present,
        PushOutcome::Mounted { .. } => TransferState::Mounted,
        PushOutcome::Uploaded => TransferState::Done,
    };
    emit(
        reporter,
        "push",
        kind,
        &desc.digest,
        desc.size,
        desc.size,
        state,
    );
    Ok(outcome)
}

async fn send_image(
    store: &Store,
    client: &Client,
    repo: &Repo,
    digest: &str,
    opts: &PushOptions,
    reporter: &RefCell<&mut dyn Reporter>,
    tally: &mut PushTally,
) -> Result<(), TransferError> {
    let bytes = store.read_blob(digest)?;
    let m: Manifest = parse(&bytes, digest, "manifest")?;
    let mut blobs: Vec<(&Descriptor, &'static str)> = vec![(&m.config, "config")];
    for l in &m.layers {
        if media::is_foreign(&l.media_type) && !opts.include_foreign {
            emit(
                reporter,
                "push",
                "layer",
                &l.digest,
                0,
                l.size,
                TransferState::Skipped,
            );
            tally.skipped.push(l.digest.clone());
            continue;
        }
        blobs.push((l, "layer"));
    }
    blobs.sort_by_key(|(d, _)| std::cmp::Reverse(d.size));
    let concurrency = if opts.concurrency == 0 {
        4
    } else {
        opts.concurrency
    };
    let results: Vec<(u64, Result<PushOutcome, TransferError>)> =
        futures_util::stream::iter(blobs.iter())
            .map(|(d, kind)| async move {
                (
                    d.size,
                    send_blob(store, client, repo, d, kind, reporter).await,
                )
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    for (size, r) in results {
        match r? {
            PushOutcome::Existed => tally.existed += 1,
            PushOutcome::Mounted { .. } => tally.mounted += 1,
            PushOutcome::Uploaded => {
                tally.uploaded += 1;
                tally.bytes += size;
            }
        }
    }
    tally
        .blobs
        .extend(blobs.iter().map(|(d, _)| d.digest.clone()));
    client
        .put_manifest(repo, digest, &bytes, &media_type_of(&m.media_type, &bytes))
        .await?;
    emit(
        reporter,
        "push",
        "manifest",
        digest,
        bytes.len() as u64,
        bytes.len() as u64,
        TransferState::Done,
    );
    tally.blobs.insert(digest.to_string());
    Ok(())
}

fn media_type_of(declared: &Option<String>, bytes: &[u8]) -> String {
    if let Some(t) = declared {
        return t.clone();
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if v.get("manifests").is_some() {
        media::OCI_INDEX.to_string()
    } else {
        media::OCI_MANIFEST.to_string()
    }
}

/// The manifest (or index) to send for `digest`: its layers kept uncompressed in the store are
/// compressed once (gzip, remembered by diff_id) under a new manifest (see
/// [`super::images::distributable`]).
fn distributable(store: &Store, digest: &str, media_type: &str) -> Result<String, TransferError> {
    super::images::distributable(store, digest, media_type).map_err(|e| TransferError::Invalid {
        what: digest.to_string(),
        kind: "manifest",
        message: e.to_string(),
    })
}

/// Pushes the image or index `src` of the store to `dest` (default: `src`'s own name).
/// Blobs the repository has are skipped, blobs known in another repository of the registry
/// are mounted, the rest upload in parallel; manifests go last, the tagged one at the end.
pub async fn push(
    store: &Store,
    client: &Client,
    src: &str,
    dest: Option<&str>,
    opts: &PushOptions,
    reporter: &mut dyn Reporter,
) -> Result<Pushed, TransferError> {
    let mut entry = if src.starts_with("sha256:") {
        let size = store
            .blob_size(src)?
            .ok_or_else(|| TransferError::NotInStore(src.to_string()))?;
        let bytes = store.read_blob(src)?;
        let v: serde_json::Value = parse(&bytes, src, "manifest")?;
        let mt = v["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| media_type_of(&None, &bytes));
        IndexEntry::new(&mt, src, size)
    } else {
        let full = Reference::parse(src)?.to_string();
        store
            .lookup(&full)?
            .ok_or_else(|| TransferError::NotInStore(src.to_string()))?
    };
    // Layers kept uncompressed leave the machine compressed (a new manifest digest).
    let sent = distributable(store, &entry.digest, &entry.media_type)?;
    if sent != entry.digest {
        let size = store.blob_size(&sent)?.unwrap_or(0);
        let mut e = IndexEntry::new(&entry.media_type, &sent, size);
        e.platform = entry.platform.clone();
        entry = e;
    }
    let dest_name = dest.unwrap_or(src);
    let dest_ref = Reference::parse(dest_name)?;
    let repo = Repo::of(&dest_ref);
    let target = match (&dest_ref.digest, &dest_ref.tag) {
        (_, Some(t)) => t.clone(),
        (Some(_), None) => entry.digest.clone(),
        (None, None) => "latest".to_string(),
    };
    let reporter = RefCell::new(reporter);
    let mut tally = PushTally::default();
    if media::is_index(&entry.media_type) {
        let bytes = store.read_blob(&entry.digest)?;
        let idx: Index = parse(&bytes, &entry.digest, "index")?;
        for m in &idx.manifests {
            if store.blob_size(&m.digest)?.is_none() {
                return Err(TransferError::Invalid {
                    what: src.to_string(),
                    kind: "index",
                    message: format!(
                        "its entry {} ({}) is not in the store; pull it with --all-platforms first",
                        m.digest,
                        m.platform
                            .as_ref()
                            .map(|p| p.to_string())
                            .unwrap_or_default()
                    ),
                });
            }
            if media::is_index(&m.media_type) {
                return Err(TransferError::Invalid {
                    what: src.to_string(),
                    kind: "index",
                    message: "nested indexes are not supported yet".into(),
                });
            }
            send_image(store, client, &repo, &m.digest, opts, &reporter, &mut tally).await?;
        }
        client
            .put_manifest(&repo, &target, &bytes, &entry.media_type)
            .await?;
    } else {
        send_image(
            store,
            client,
            &repo,
            &entry.digest,
            opts,
            &reporter,
            &mut tally,
        )
        .await?;
        if target != entry.digest {
            let bytes = store.read_blob(&entry.digest)?;
            client
                .put_manifest(&repo, &target, &bytes, &entry.media_type)
                .await?;
        }
    }
    remember(store, &repo, &tally.blobs);
    let reference = if dest_ref.tag.is_some() {
        dest_ref.to_string()
    } else {
        format!("{}@{}", dest_ref.repository(), entry.digest)
    };
    Ok(Pushed {
        reference,
        digest: entry.digest,
        uploaded: tally.uploaded,
        uploaded_bytes: tally.bytes,
        existed: tally.existed,
        mounted: tally.mounted,
        skipped_foreign: tally.skipped,
    })
}
