//! Harness for cluster tests against real `shadowstore` processes.
//!
//! A [`Cluster`] runs N node processes from the workspace's freshly built
//! binary, each with its own data directory under a temporary directory and
//! its own loopback port. Tests kill (SIGKILL), stop (SIGTERM), restart and
//! wipe nodes, and talk to the cluster through the real client library.

pub mod fuzzing;
pub mod ledger;
pub mod lossyfs;

use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_client::ClientTls;
use shadowstore_proto::v1::shadow_store_client::ShadowStoreClient;
use tonic::transport::Channel;

/// How long a cluster may take to form or settle in tests.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's target directory for the profile the tests run in.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// Path of a workspace binary, rebuilt once per test process so tests never
/// run a stale node.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_dir = target_dir();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "shadowstore-node", "-p", "shadowstore-client", "--bins"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the node binaries");
        assert!(status.success(), "cargo build of the node binaries failed");
    });
    let p = target_dir().join(name);
    assert!(p.exists(), "binary {} missing after build", p.display());
    p
}

/// A free loopback port (bound and released; a small race is accepted).
pub fn free_port() -> u16 {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind :0").port();
        let mut used = USED.lock().unwrap();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

pub struct NodeProc {
    pub index: usize,
    /// The client listener (`listen_addr`).
    pub addr: String,
    /// The peer listener (`peer_listen_addr`): Raft, joins, shards.
    pub peer_addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit on its own and
    /// returns how it ended.
    pub async fn wait_exited(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = &mut self.child
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("node {} still running after {timeout:?}", self.index);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the node's process with its current configuration file.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let err = log.try_clone()?;
        // The tests' log filter, unless the node's configuration names one.
        let configured = std::fs::read_to_string(&self.config)?.lines().any(|l| l.starts_with("log = "));
        let mut cmd = Command::new(binary("shadowstore"));
        if !configured {
            cmd.env("SHADOWSTORE_LOG", "info,openraft=warn");
        }
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .context("spawning shadowstore")?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = &mut self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
            let _ = c.wait();
        }
        self.child = None;
    }
}

pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// The cluster's CA and certificates (`node`, `admin`, `writer`,
    /// `reader`), as `shadowctl certs` lays them out.
    pub certs: PathBuf,
}

/// Makes the cluster's certificates in `tmp/certs` (keeping a CA already
/// there) and returns the TOML lines that point a node at them.
fn certificates(tmp: &Path) -> anyhow::Result<(PathBuf, String)> {
    let certs = tmp.join("certs");
    shadowstore_client::certs::local_set(&certs)?;
    let file = |f: &str| format!("{:?}", certs.join(f).display().to_string());
    let toml = format!(
        "tls.ca_file = {}\ntls.cert_file = {}\ntls.key_file = {}\n",
        file("ca.pem"),
        file("node.pem"),
        file("node.key")
    );
    Ok((certs, toml))
}

impl Cluster {
    /// Starts `n` nodes: node 0 bootstraps, the others join through it.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Self::start_with(n, "").await
    }

    /// Like [`start`](Self::start), with `extra` appended to every node's
    /// TOML configuration.
    pub async fn start_with(n: usize, extra: &str) -> anyhow::Result<Cluster> {
        let mut cluster = Self::configure(n, extra)?;
        cluster.launch().await?;
        Ok(cluster)
    }

    /// Writes the configuration of `n` nodes (node 0 bootstraps, the others
    /// join through it; `extra` appended to each) without starting them:
    /// a test can prepare each node's directory (`node.dir`, data under
    /// `data_dir()`) before [`launch`](Self::launch).
    pub fn configure(n: usize, extra: &str) -> anyhow::Result<Cluster> {
        let tmp = tempfile::tempdir()?;
        let (certs, tls) = certificates(tmp.path())?;
        let mut nodes = Vec::new();
        let peer_addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        for (i, peer_addr) in peer_addrs.iter().enumerate() {
            let dir = tmp.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir)?;
            let addr = format!("127.0.0.1:{}", free_port());
            let config = dir.join("node.toml");
            let join = if i == 0 { String::new() } else { format!("{:?}", peer_addrs[0]) };
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\nlisten_addr = \"{addr}\"\npeer_listen_addr = \"{peer_addr}\"\nbootstrap = {}\n\
                     join = [{join}]\nregion = \"r{}\"\nquiesce_after_ms = 3000\n{tls}{extra}\n",
                    dir.join("data").display().to_string(),
                    i == 0,
                    i % 3
                ),
            )?;
            nodes.push(NodeProc { index: i, addr, peer_addr: peer_addr.clone(), dir, config, child: None });
        }
        Ok(Cluster { _tmp: tmp, nodes, certs })
    }

    /// Starts the configured nodes: node 0 first, then the others, and
    /// waits until they have formed the cluster.
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        self.nodes[0].spawn()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 1..self.nodes.len() {
            self.nodes[i].spawn()?;
        }
        self.wait_formed(self.nodes.len()).await
    }

    /// Starts one node per data directory already in `tmp` (`node{i}/data`,
    /// as [`start`](Self::start) lays them out), listening on `addrs[i]`
    /// for clients and on a new port for peers: the cluster those
    /// directories were written by, started again by this build. Waits
    /// until all `addrs.len()` nodes are members again.
    pub async fn adopt(tmp: tempfile::TempDir, addrs: &[&str], extra: &str) -> anyhow::Result<Cluster> {
        let (certs, tls) = certificates(tmp.path())?;
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let dir = tmp.path().join(format!("node{i}"));
            let config = dir.join("node.toml");
            let peer_addr = format!("127.0.0.1:{}", free_port());
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\nlisten_addr = \"{addr}\"\npeer_listen_addr = \"{peer_addr}\"\nregion = \"r{}\"\n\
                     {tls}{extra}\n",
                    dir.join("data").display().to_string(),
                    i % 3
                ),
            )?;
            nodes.push(NodeProc { index: i, addr: addr.to_string(), peer_addr, dir, config, child: None });
        }
        let mut cluster = Cluster { _tmp: tmp, nodes, certs };
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        cluster.wait_formed(addrs.len()).await?;
        Ok(cluster)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The TLS material of certificate `name` (`admin`, `writer`,
    /// `reader` or `node`).
    pub fn tls(&self, name: &str) -> ClientTls {
        ClientTls::from_dir(&self.certs, name).expect("the cluster's certificates")
    }

    /// Client options presenting the admin certificate.
    pub fn options(&self) -> ClientOptions {
        ClientOptions { tls: Some(self.tls("admin")), ..ClientOptions::default() }
    }

    /// An admin client of every node.
    pub fn client(&self) -> Client {
        Client::new_lazy(self.endpoints(), self.options()).expect("client")
    }

    /// An admin client that only knows node `i` (requests start there).
    pub fn client_via(&self, i: usize) -> Client {
        Client::new_lazy([self.nodes[i].addr.clone()], self.options()).expect("client")
    }

    /// A raw stub for node `i` presenting the admin certificate.
    pub fn stub(&self, i: usize) -> ShadowStoreClient<Channel> {
        self.stub_at(&self.nodes[i].addr)
    }

    /// A raw stub for the node at `addr` presenting the admin certificate.
    pub fn stub_at(&self, addr: &str) -> ShadowStoreClient<Channel> {
        shadowstore_client::node_stub(addr, Some(&self.tls("admin"))).expect("stub")
    }

    /// The operator HTTP address (`http_addr`) node `i` printed at start-up.
    pub async fn http_addr(&self, i: usize) -> String {
        let log = self.nodes[i].log_path();
        eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.lines()
                    .find_map(|l| l.strip_prefix("shadowstore operator HTTP on http://"))
                    .and_then(|rest| rest.strip_suffix("/metrics"))
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("no operator HTTP line yet"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {i}: {e}\n{}", tail(&log)))
    }

    /// Waits until `n` nodes are members, min(n, 5) of them meta voters,
    /// every running node reports every other running node up, and the
    /// directory records each node's peer listener.
    pub async fn wait_formed(&mut self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let client = Client::new_lazy(
            self.endpoints(),
            ClientOptions { total_deadline: Duration::from_secs(2), ..self.options() },
        )?;
        loop {
            for node in &mut self.nodes {
                if node.child.is_some() && !node.is_running() {
                    bail!("node {} exited; log:\n{}", node.index, tail(&node.log_path()));
                }
            }
            if let Ok(s) = client.cluster_status().await {
                let voters = s.nodes.iter().filter(|x| x.meta_voter).count();
                let up = s.nodes.iter().all(|x| x.health == "up" || x.health == "self");
                let routed = s.nodes.iter().all(|x| {
                    self.nodes.iter().find(|p| p.addr == x.address).is_none_or(|p| p.peer_addr == x.peer_address)
                });
                if s.nodes.len() == n && voters == n.min(5) && up && routed {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("cluster did not form within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process index of the node with cluster id `node_id`.
    pub async fn index_of(&self, node_id: u64) -> anyhow::Result<usize> {
        let s = self.client().cluster_status().await?;
        let addr = s
            .nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .map(|n| n.address.clone())
            .with_context(|| format!("node {node_id} not in status"))?;
        self.nodes.iter().position(|n| n.addr == addr).with_context(|| format!("no process at {addr}"))
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
    }

    pub fn stop(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGTERM);
    }

    /// Starts node `i` again (killing it first if it runs) and waits until
    /// it answers as a member (its replicas are open by then).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].is_running() {
            self.kill(i);
        }
        self.nodes[i].spawn()?;
        self.wait_node_ready(i).await
    }

    /// Waits until node `i` itself answers ClusterStatus (it does only once
    /// it has its identity and has started its local replicas).
    pub async fn wait_node_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let client = Client::new_lazy(
            [self.nodes[i].addr.clone()],
            ClientOptions { total_deadline: Duration::from_secs(2), ..self.options() },
        )?;
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            if !self.nodes[i].is_running() {
                bail!("node {i} exited; log:\n{}", tail(&self.nodes[i].log_path()));
            }
            if client.cluster_status().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("node {i} not ready within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills node `i`, deletes its data directory and starts it again: it
    /// joins as a new node (it must not be the bootstrap node 0).
    pub async fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        assert_ne!(i, 0, "wiping the bootstrap node would bootstrap a new cluster");
        self.kill(i);
        std::fs::remove_dir_all(self.nodes[i].data_dir())?;
        self.nodes[i].spawn()?;
        self.wait_node_ready(i).await
    }

    pub fn running(&mut self) -> Vec<usize> {
        self.nodes.iter_mut().filter_map(|n| n.is_running().then_some(n.index)).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.signal(libc::SIGKILL);
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("---- node {} log tail ----\n{}", n.index, tail(&n.log_path()));
            }
        }
    }
}

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Files under sled's `blobs/` directory of a data dir.
pub fn blob_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("blobs")).map(|rd| rd.count()).unwrap_or(0)
}

/// Retries `f` until it returns Ok or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context(format!("not true within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `len` bytes of xorshift noise from `seed` (incompressible test data).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Flips one bit of the group's last Raft log record (or of its vote, if a
/// snapshot already purged the log) in a stopped node's sled: rot above
/// sled's own checks, beneath the node's record seals.
pub async fn rot_raft_record(data_dir: &Path, group: u64) {
    use shadowstore_node::storage::StorageEngine;
    use shadowstore_node::storage::Tree;
    use shadowstore_node::storage::WriteBatch;
    use shadowstore_node::storage::keys;
    use shadowstore_node::storage::sled_engine::SledEngine;

    let group = shadowstore_base::ids::GroupId::new(group);
    let engine = SledEngine::open(data_dir, 8 << 20).expect("open stopped node's sled");
    let last_entry =
        engine.last_in_range(Tree::Log, &keys::group_start(group), &keys::group_end(group)).expect("read the log");
    let (tree, key, mut value) = match last_entry {
        Some((k, v)) => (Tree::Log, k, v),
        None => {
            let k = keys::raft_state(group, keys::VOTE_TAG);
            let v = engine.get(Tree::RaftState, &k).expect("read the vote").expect("a vote record");
            (Tree::RaftState, k, v)
        }
    };
    value[0] ^= 0x10;
    let mut b = WriteBatch::new(tree);
    b.put(key, value);
    engine.write(b).expect("write the rotted record");
    StorageEngine::sync(engine.clone()).await.expect("sync");
}

/// Waits until the leader of `resource` knows replica `replica` stores
/// every committed entry (a follower that has not started its replica yet
/// has no Raft record to rot).
pub async fn wait_replica_caught_up(c: &Client, resource: &str, replica: u64) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let d = c.describe_resource(resource).await?;
            let matched = d.progress.iter().find(|p| p.replica_id == replica).and_then(|p| p.matched_index);
            anyhow::ensure!(matched >= Some(d.committed_index), "follower at {matched:?} of {}", d.committed_index);
            Ok(())
        }
    })
    .await
}

/// Records of `group` in every tree of a stopped node's sled (its log,
/// Raft state, snapshots, shard chunks and shard records): 0 once the
/// node deleted its replica of the group.
pub fn group_records(data_dir: &Path, group: u64) -> usize {
    use shadowstore_node::storage::StorageEngine;
    use shadowstore_node::storage::Tree;
    use shadowstore_node::storage::keys;
    use shadowstore_node::storage::sled_engine::SledEngine;

    let group = shadowstore_base::ids::GroupId::new(group);
    let engine = SledEngine::open(data_dir, 8 << 20).expect("open stopped node's sled");
    Tree::ALL
        .iter()
        .filter(|t| !matches!(t, Tree::Local))
        .map(|t| engine.range(*t, &keys::group_start(group), &keys::group_end(group), usize::MAX).expect("range").len())
        .sum()
}

/// `GET path` over plain HTTP/1.1 (the operator listener): the status
/// line, the headers (lower-cased) and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String, String) {
    use std::io::Read;
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the operator HTTP listener");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}
