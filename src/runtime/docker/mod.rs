//! RUN steps through a Docker engine (`--runtime docker`): the engine runs the step while
//! the build keeps its cache, store and push. This part owns the Engine API conversation
//! for one step: the API version negotiated (`/_ping`, `/version`); the parent image loaded
//! into the engine when it lacks it (the build streams its `save --format docker` archive);
//! the container created with the step's command, environment, user, working directory,
//! network, `HostConfig.Isolation`, memory and processors; its output attached and split
//! by stream; the exit code; the change set taken as the engine's own diff (the container
//! committed, the committed image's top layer saved out of the engine, in the Windows
//! format on a Windows engine); the container and the committed image removed.
//!
//! The transport ([`endpoint`], [`http`]) is a unix socket, a Windows named pipe, or TCP
//! with TLS, as `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` say.

pub mod archive;
pub mod endpoint;
pub mod http;
pub mod stream;

use super::{
    Changes, MountKind, Needs, OutputStream, Rootfs, RunOutcome, Runtime, RuntimeError, Step,
    Timings,
};
use crate::image::{Isolation, Sku, WindowsHost, WindowsVersion};
pub use endpoint::{Endpoint, EndpointOptions};
use http::{ReqBody, Response};
use serde_json::{Value, json};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The newest Engine API version this client speaks.
pub const API_VERSION: &str = "1.47";
/// The oldest it accepts (NanoCpus and `Mounts` need 1.25; `condition=` on wait 1.30).
pub const MIN_API_VERSION: &str = "1.30";
/// Lines of output kept for the error of a failed step.
const TAIL: usize = 20;
/// The largest JSON answer read.
const JSON_LIMIT: u64 = 64 << 20;

/// Compares `1.41`-style versions as numbers.
fn version_key(v: &str) -> (u32, u32) {
    let mut it = v.trim().trim_start_matches('v').split('.');
    let a = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let b = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (a, b)
}

/// The version to speak: ours or the engine's, whichever is older, but not below the
/// engine's minimum; an error when that is below ours.
pub fn negotiate(server_max: &str, server_min: Option<&str>) -> Result<String, String> {
    let ours = version_key(API_VERSION);
    let theirs = version_key(server_max);
    let mut v = if theirs < ours {
        server_max.trim().to_string()
    } else {
        API_VERSION.to_string()
    };
    if let Some(min) = server_min
        && version_key(min) > version_key(&v)
    {
        v = min.trim().to_string();
    }
    if version_key(&v) < version_key(MIN_API_VERSION) {
        return Err(format!(
            "the engine speaks API {server_max}; wcbuild needs {MIN_API_VERSION} or newer"
        ));
    }
    Ok(v)
}

/// The Windows host an engine reports in `/info` (`OperatingSystem` "… (OS Build
/// 20348.2227)", `KernelVersion` "10.0 20348 (…)"): Server when the name says so.
pub fn windows_host_of_info(info: &Value) -> Option<WindowsHost> {
    if info["OSType"].as_str() != Some("windows") {
        return None;
    }
    let os = info["OperatingSystem"].as_str().unwrap_or("");
    let kernel = info["KernelVersion"].as_str().unwrap_or("");
    let from_os = os.split("OS Build ").nth(1).and_then(|rest| {
        let b: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        WindowsVersion::parse(&format!("10.0.{b}"))
    });
    let from_kernel = || {
        let mut it = kernel.split_whitespace();
        let mm = it.next()?;
        let build = it.next()?;
        WindowsVersion::parse(&format!("{mm}.{build}"))
    };
    let version = from_os.or_else(from_kernel)?;
    let sku = if os.contains("Server") {
        Sku::Server
    } else {
        Sku::Client
    };
    Some(WindowsHost::new(version, sku))
}

/// A Docker engine that runs steps.
pub struct DockerRuntime {
    endpoint: Endpoint,
    api: String,
    os_type: String,
    server_version: String,
    info: Value,
    /// The parents steps ran on, with their bottom layer's diff_id and whether this runtime
    /// loaded them: when the build ends the first per bottom layer stays (the next build's
    /// steps start from it, and its base layers stay unpacked in the engine), and the others
    /// this runtime loaded (each step's parent) are removed; an image the engine had before is
    /// never removed.
    loaded: std::sync::Mutex<Vec<(String, String, bool)>>,
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        let loaded = std::mem::take(&mut *self.loaded.lock().unwrap_or_else(|p| p.into_inner()));
        let mut kept: Vec<&str> = Vec::new();
        for (id, bottom, ours) in &loaded {
            if !kept.contains(&bottom.as_str()) {
                kept.push(bottom);
                continue;
            }
            if !ours || loaded.iter().any(|(i, _, o)| i == id && !o) {
                continue;
            }
            let _ = self.request(
                "DELETE",
                &format!("/images/{}?noprune=1", http::encode(id)),
                ReqBody::None,
            );
        }
    }
}

/// What the engine said about a failed request.
fn engine_message(status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("{msg} (HTTP {status})")
}

/// A step's mounts as the engine takes them: `HostConfig.Mounts`, `HostConfig.Tmpfs`,
/// extra environment, and the secret files to remove afterwards.
type EngineMounts = (
    Vec<Value>,
    serde_json::Map<String, Value>,
    Vec<String>,
    SecretFiles,
);

/// Secret files made for a step, removed when it ends.
struct SecretFiles(Vec<PathBuf>);

impl Drop for SecretFiles {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The container and committed image of a step, removed when it ends however it ends.
struct Cleanup<'a> {
    rt: &'a DockerRuntime,
    container: Option<String>,
    image: Option<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.container.take() {
            let _ = self.rt.request(
                "DELETE",
                &format!("/containers/{c}?force=1&v=1"),
                ReqBody::None,
            );
        }
        if let Some(i) = self.image.take() {
            let _ = self.rt.request(
                "DELETE",
                &format!("/images/{}?noprune=1", http::encode(&i)),
                ReqBody::None,
            );
        }
    }
}

impl DockerRuntime {
    /// Connects to the engine the options name and negotiates the API version.
    pub fn connect(opts: &EndpointOptions) -> Result<DockerRuntime, RuntimeError> {
        let endpoint = Endpoint::new(opts).map_err(RuntimeError::Invalid)?;
        let mut rt = DockerRuntime {
            endpoint,
            api: String::new(),
            os_type: String::new(),
            server_version: String::new(),
            info: Value::Null,
            loaded: std::sync::Mutex::new(Vec::new()),
        };
        let (_, version) = rt.json(
            "GET",
            "/version",
            ReqBody::None,
            &[200],
            "asking its version",
        )?;
        let max = version["ApiVersion"].as_str().unwrap_or("").to_string();
        if max.is_empty() {
            return Err(rt.err("asking its version: no ApiVersion in the answer".into()));
        }
        rt.api = negotiate(&max, version["MinAPIVersion"].as_str()).map_err(|m| rt.err(m))?;
        rt.os_type = version["Os"].as_str().unwrap_or("linux").to_string();
        rt.server_version = version["Version"].as_str().unwrap_or("?").to_string();
        let (_, info) = rt.json(
            "GET",
            "/info",
            ReqBody::None,
            &[200],
            "asking about its host",
        )?;
        rt.info = info;
        Ok(rt)
    }

    /// The engine's OS (`linux`, `windows`).
    pub fn os_type(&self) -> &str {
        &self.os_type
    }

    /// The API version negotiated.
    pub fn api_version(&self) -> &str {
        &self.api
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn err(&self, message: String) -> RuntimeError {
        RuntimeError::Engine {
            endpoint: self.endpoint.display.clone(),
            message,
        }
    }

    fn path(&self, p: &str) -> String {
        if self.api.is_empty() {
            p.to_string()
        } else {
            format!("/v{}{p}", self.api)
        }
    }

    fn io_err(&self, what: &str, e: io::Error) -> RuntimeError {
        self.err(format!("{what}: {e}"))
    }

    /// One request; the connection is made for it.
    fn request(&self, method: &str, p: &str, body: ReqBody<'_>) -> io::Result<Response> {
        let conn = self.endpoint.connect()?;
        http::send(
            conn,
            &self.endpoint.host_header(),
            method,
            &self.path(p),
            body,
            false,
        )
    }

    /// A request whose answer is JSON (or empty); statuses outside `ok` are errors carrying
    /// the engine's message.
    fn json(
        &self,
        method: &str,
        p: &str,
        body: ReqBody<'_>,
        ok: &[u16],
        what: &str,
    ) -> Result<(u16, Value), RuntimeError> {
        let r = self
            .request(method, p, body)
            .map_err(|e| self.io_err(what, e))?;
        let status = r.status;
        let bytes = r.read_all(JSON_LIMIT).map_err(|e| self.io_err(what, e))?;
        if !ok.contains(&status) {
            return Err(self.err(format!("{what}: {}", engine_message(status, &bytes))));
        }
        let v = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| self.err(format!("{what}: the answer is not JSON: {e}")))?
        };
        Ok((status, v))
    }

    /// Loads the parent into the engine unless it has it.
    fn ensure_image(&self, rootfs: &Rootfs) -> Result<Option<String>, RuntimeError> {
        let Some(img) = &rootfs.image else {
            return Ok(None);
        };
        let inspect = format!("/images/{}/json", http::encode(&img.id));
        let (status, _) = self.json(
            "GET",
            &inspect,
            ReqBody::None,
            &[200, 404],
            "looking up the parent image",
        )?;
        let bottom = img.diff_ids.first().cloned().unwrap_or_default();
        if status == 200 {
            self.loaded.lock().unwrap_or_else(|p| p.into_inner()).push((
                img.id.clone(),
                bottom,
                false,
            ));
            return Ok(Some(img.id.clone()));
        }
        let save = img.save.clone();
        let mut write = |w: &mut dyn io::Write| save(w);
        let what = format!("loading the parent image {}", img.id);
        let r = self
            .request(
                "POST",
                "/images/load?quiet=1",
                ReqBody::Stream("application/x-tar", &mut write),
            )
            .map_err(|e| self.io_err(&what, e))?;
        let status = r.status;
        let bytes = r.read_all(JSON_LIMIT).map_err(|e| self.io_err(&what, e))?;
        if status != 200 {
            return Err(self.err(format!("{what}: {}", engine_message(status, &bytes))));
        }
        // A JSON stream: any message with an error fails the load.
        for v in serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>() {
            let Ok(v) = v else { break };
            if let Some(e) = v["error"].as_str().or(v["errorDetail"]["message"].as_str()) {
                return Err(self.err(format!("{what}: {e}")));
            }
        }
        let (status, _) = self.json("GET", &inspect, ReqBody::None, &[200, 404], &what)?;
        if status != 200 {
            return Err(self.err(format!(
                "{what}: the engine loaded the archive but has no image {}",
                img.id
            )));
        }
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((img.id.clone(), bottom, true));
        Ok(Some(img.id.clone()))
    }

    /// `HostConfig` mounts, tmpfs entries and extra environment for the step's mounts.
    fn mounts(&self, step: &Step, rootfs: &Rootfs) -> Result<EngineMounts, RuntimeError> {
        let windows = self.os_type == "windows";
        let mut binds = Vec::new();
        let mut tmpfs = serde_json::Map::new();
        let mut env = Vec::new();
        let mut secrets = SecretFiles(Vec::new());
        let local = |kind: &str, target: &str| -> Result<(), RuntimeError> {
            if self.endpoint.is_local() {
                Ok(())
            } else {
                Err(RuntimeError::Mount {
                    target: target.to_string(),
                    reason: format!(
                        "a {kind} mount needs the engine on this machine; the engine at {} cannot see this machine's files",
                        self.endpoint.display
                    ),
                })
            }
        };
        for (i, m) in step.mounts.iter().enumerate() {
            let bind = |source: &std::path::Path, ro: bool| json!({"Type": "bind", "Source": source.to_string_lossy(), "Target": m.target, "ReadOnly": ro});
            match &m.kind {
                MountKind::Bind { source } => {
                    local("bind", &m.target)?;
                    if !m.readonly {
                        return Err(RuntimeError::Mount {
                            target: m.target.clone(),
                            reason: "a read-write bind mount (writes discarded) is not supported through a Docker engine: use a cache mount, or a read-only bind".into(),
                        });
                    }
                    binds.push(bind(source, true));
                }
                MountKind::Cache { dir } => {
                    local("cache", &m.target)?;
                    binds.push(bind(dir, m.readonly));
                }
                MountKind::Tmpfs { size } => {
                    if windows {
                        return Err(RuntimeError::Mount {
                            target: m.target.clone(),
                            reason: "Windows containers have no tmpfs".into(),
                        });
                    }
                    let opts = size.map(|s| format!("size={s}")).unwrap_or_default();
                    tmpfs.insert(m.target.clone(), Value::String(opts));
                }
                MountKind::SecretEnv { name, data } => {
                    env.push(format!("{name}={}", String::from_utf8_lossy(data)));
                }
                MountKind::Secret {
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    local("secret", &m.target)?;
                    // On Linux a tmpfs of the host's, so the value never reaches a disk.
                    let base = if std::path::Path::new("/dev/shm").is_dir() {
                        PathBuf::from("/dev/shm")
                    } else {
                        rootfs.scratch.clone()
                    };
                    let dir = base.join(format!(
                        "wcbuild-secret-{}-{}-{i}",
                        std::process::id(),
                        Instant::now().elapsed().as_nanos()
                    ));
                    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Io {
                        op: "create",
                        path: dir.clone(),
                        source: e,
                    })?;
                    secrets.0.push(dir.clone());
                    let file = dir.join("secret");
                    std::fs::write(&file, data).map_err(|e| RuntimeError::Io {
                        op: "write",
                        path: file.clone(),
                        source: e,
                    })?;
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        let _ =
                            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                        let _ =
                            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode));
                        let _ = std::os::unix::fs::chown(&file, Some(*uid), Some(*gid));
                    }
                    #[cfg(not(unix))]
                    let _ = (mode, uid, gid);
                    binds.push(bind(&file, true));
                }
                MountKind::Ssh { socket, .. } => {
                    local("ssh", &m.target)?;
                    binds.push(bind(socket, true));
                }
            }
        }
        Ok((binds, tmpfs, env, secrets))
    }

    /// The create request for `step` on `image`.
    fn create_body(
        &self,
        step: &Step,
        image: &str,
        binds: Vec<Value>,
        tmpfs: serde_json::Map<String, Value>,
        extra_env: Vec<String>,
    ) -> Value {
        let windows = self.os_type == "windows";
        let mut env = step.env.clone();
        env.extend(extra_env);
        let network = match step.network {
            super::Network::None => "none",
            // Windows has no host network; its default is NAT.
            super::Network::Host if windows => "default",
            super::Network::Host => "host",
        };
        let mut host = json!({
            "NetworkMode": network,
            "AutoRemove": false,
            "Privileged": step.insecure,
            "ExtraHosts": step.extra_hosts.iter().map(|(h, ip)| format!("{h}:{ip}")).collect::<Vec<_>>(),
        });
        if let Some(i) = step.isolation {
            host["Isolation"] = Value::String(match i {
                Isolation::Auto => String::new(),
                other => other.as_str().to_string(),
            });
        }
        if let Some(m) = step.resources.memory {
            host["Memory"] = json!(m);
        }
        if let Some(c) = step.resources.cpus {
            host["NanoCpus"] = json!((c * 1e9) as i64);
        }
        if !binds.is_empty() {
            host["Mounts"] = Value::Array(binds);
        }
        if !tmpfs.is_empty() {
            host["Tmpfs"] = Value::Object(tmpfs);
        }
        let hostname = if step.hostname.is_empty() {
            "buildkitsandbox"
        } else {
            step.hostname.as_str()
        };
        json!({
            "Image": image,
            "Cmd": step.args,
            "Entrypoint": [""],
            "Env": env,
            "User": step.user,
            "WorkingDir": step.cwd,
            "Hostname": hostname,
            "Tty": false,
            "OpenStdin": false,
            "AttachStdin": false,
            "AttachStdout": true,
            "AttachStderr": true,
            "Labels": {"wcbuild.step": "1"},
            "HostConfig": host,
        })
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> String {
        format!(
            "the docker engine at {} ({} {}, API {})",
            self.endpoint.display, self.os_type, self.server_version, self.api
        )
    }

    fn needs(&self) -> Needs {
        Needs::Image
    }

    fn windows_host(&self) -> Result<Option<WindowsHost>, RuntimeError> {
        Ok(windows_host_of_info(&self.info))
    }

    fn run(
        &self,
        rootfs: &Rootfs,
        step: &Step,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<RunOutcome, RuntimeError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        if step.args.is_empty() {
            return Err(RuntimeError::Invalid("no command".into()));
        }
        let image = self.ensure_image(rootfs)?.ok_or_else(|| {
            RuntimeError::Invalid("a docker engine needs the parent as an image".into())
        })?;
        timings.mount = started.elapsed();
        let (binds, tmpfs, extra_env, secrets) = self.mounts(step, rootfs)?;
        let skip: Vec<String> = step
            .mounts
            .iter()
            .filter(|m| !matches!(m.kind, MountKind::SecretEnv { .. }))
            .map(|m| m.target.trim_matches(['/', '\\']).replace('\\', "/"))
            .collect();
        let body = self.create_body(step, &image, binds, tmpfs, extra_env);
        let body = serde_json::to_vec(&body).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let (_, created) = self.json(
            "POST",
            "/containers/create",
            ReqBody::Json(body),
            &[201],
            "creating the container",
        )?;
        let id = created["Id"]
            .as_str()
            .ok_or_else(|| self.err("creating the container: no Id in the answer".into()))?
            .to_string();
        let mut cleanup = Cleanup {
            rt: self,
            container: Some(id.clone()),
            image: None,
        };
        timings.bundle = started.elapsed() - timings.mount;
        // Attach before start, so no output is lost.
        let conn = self
            .endpoint
            .connect()
            .map_err(|e| self.io_err("attaching to the container", e))?;
        let resp = http::send(
            conn,
            &self.endpoint.host_header(),
            "POST",
            &self.path(&format!(
                "/containers/{id}/attach?stream=1&stdout=1&stderr=1"
            )),
            ReqBody::None,
            true,
        )
        .map_err(|e| self.io_err("attaching to the container", e))?;
        if resp.status != 101 && resp.status != 200 {
            let s = resp.status;
            let b = resp.read_all(JSON_LIMIT).unwrap_or_default();
            return Err(self.err(format!(
                "attaching to the container: {}",
                engine_message(s, &b)
            )));
        }
        let mut raw = resp.into_body().raw();
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<stream::Frame>>();
        let reader = std::thread::spawn(move || {
            loop {
                match stream::next_frame(&mut raw) {
                    Ok(Some(f)) => {
                        if tx.send(Ok(f)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let run_started = Instant::now();
        self.json(
            "POST",
            &format!("/containers/{id}/start"),
            ReqBody::None,
            &[204, 304],
            "starting the container",
        )?;
        let mut tail: Vec<String> = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        let mut system_errors = Vec::new();
        loop {
            if step.cancel.is_cancelled() {
                let _ = self.request("POST", &format!("/containers/{id}/kill"), ReqBody::None);
                drop(rx);
                let _ = reader.join();
                return Err(RuntimeError::Cancelled);
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(stream::Frame::Output(s, data))) => {
                    output(s, &data);
                    partial.extend_from_slice(&data);
                    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=i).collect();
                        tail.push(
                            String::from_utf8_lossy(&line[..line.len() - 1])
                                .trim_end_matches('\r')
                                .to_string(),
                        );
                        if tail.len() > TAIL {
                            tail.remove(0);
                        }
                    }
                }
                Ok(Ok(stream::Frame::SystemError(e))) => system_errors.push(e),
                Ok(Err(e)) => return Err(self.io_err("reading the container's output", e)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = reader.join();
        if !partial.is_empty() {
            tail.push(String::from_utf8_lossy(&partial).into_owned());
            if tail.len() > TAIL {
                tail.remove(0);
            }
        }
        let (_, waited) = self.json(
            "POST",
            &format!("/containers/{id}/wait?condition=not-running"),
            ReqBody::None,
            &[200],
            "waiting for the container",
        )?;
        timings.runtime = run_started.elapsed();
        if let Some(m) = waited["Error"]["Message"]
            .as_str()
            .filter(|m| !m.is_empty())
        {
            return Err(self.err(format!("the container failed: {m}")));
        }
        if let Some(e) = system_errors.first() {
            return Err(self.err(format!("the container's output stream: {e}")));
        }
        let exit_code = waited["StatusCode"].as_i64().unwrap_or(-1) as i32;
        drop(secrets);
        let cleanup_started = Instant::now();
        let changes = if exit_code == 0 {
            // The engine's own diff: commit, then the committed image's top layer.
            let (_, committed) = self.json(
                "POST",
                &format!("/commit?container={id}&pause=0"),
                ReqBody::Json(b"{}".to_vec()),
                &[201, 200],
                "committing the container",
            )?;
            let new = committed["Id"]
                .as_str()
                .ok_or_else(|| self.err("committing the container: no Id in the answer".into()))?
                .to_string();
            cleanup.image = Some(new.clone());
            let (_, inspected) = self.json(
                "GET",
                &format!("/images/{}/json", http::encode(&new)),
                ReqBody::None,
                &[200],
                "inspecting the committed image",
            )?;
            let layers: Vec<String> = inspected["RootFS"]["Layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let parents = rootfs.image.as_ref().map(|i| i.diff_ids.len()).unwrap_or(0);
            let Some(top) = layers.last().filter(|_| layers.len() > parents).cloned() else {
                return Err(self.err(format!(
                    "the committed image {new} has {} layers, its parent {parents}: no layer for the step",
                    layers.len()
                )));
            };
            let what = format!("saving the committed image {new}");
            let r = self
                .request(
                    "GET",
                    &format!("/images/{}/get", http::encode(&new)),
                    ReqBody::None,
                )
                .map_err(|e| self.io_err(&what, e))?;
            if r.status != 200 {
                let s = r.status;
                let b = r.read_all(JSON_LIMIT).unwrap_or_default();
                return Err(self.err(format!("{what}: {}", engine_message(s, &b))));
            }
            let tar = rootfs.scratch.join("engine-layer.tar");
            archive::extract_layer(r.into_body(), &top, &tar).map_err(|e| self.io_err(&what, e))?;
            Changes::Layer { tar, skip }
        } else {
            // Nothing to take: a failed step makes no layer.
            Changes::Layer {
                tar: PathBuf::new(),
                skip,
            }
        };
        drop(cleanup);
        timings.cleanup = cleanup_started.elapsed();
        timings.total = started.elapsed();
        Ok(RunOutcome {
            exit_code,
            changes,
            tail,
            notes: Vec::new(),
            timings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_down_and_up() {
        assert_eq!(negotiate("1.41", Some("1.12")).unwrap(), "1.41");
        assert_eq!(negotiate("1.52", Some("1.44")).unwrap(), API_VERSION);
        assert_eq!(negotiate("1.99", Some("1.50")).unwrap(), "1.50");
        assert!(negotiate("1.24", None).is_err());
        assert!(version_key("1.9") < version_key("1.10"));
    }

    #[test]
    fn a_windows_engine_names_its_host() {
        let info = json!({
            "OSType": "windows",
            "OperatingSystem": "Windows Server 2022 Datacenter Version 21H2 (OS Build 20348.2227)",
            "KernelVersion": "10.0 20348 (20348.1.amd64fre.fe_release.210507-1500)",
        });
        let h = windows_host_of_info(&info).unwrap();
        assert_eq!(h.version.to_string(), "10.0.20348.2227");
        assert_eq!(h.sku, Sku::Server);
        let client = json!({
            "OSType": "windows",
            "OperatingSystem": "Windows 11 Pro",
            "KernelVersion": "10.0 26100 (26100.1.amd64fre.ge_release.240331-1435)",
        });
        let h = windows_host_of_info(&client).unwrap();
        assert_eq!(h.version.build, 26100);
        assert_eq!(h.sku, Sku::Client);
        assert!(windows_host_of_info(&json!({"OSType": "linux"})).is_none());
        assert!(windows_host_of_info(&json!({"OSType": "windows"})).is_none());
    }
}
