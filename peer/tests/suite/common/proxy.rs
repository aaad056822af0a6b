//! A TCP proxy in front of a peer's gossip listener that a test can cut: refuse everyone
//! (isolate) or one source address (block), dropping the connections already open. It counts
//! the bytes it carries, so it also serves as the forwarder of an `address_overrides` entry.

use std::collections::HashSet;
use std::net::IpAddr;
use std::net::TcpListener as StdListener;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::task::AbortHandle;

pub struct Proxy {
    pub listen: String,
    pub target: String,
    isolated: AtomicBool,
    blocked: Mutex<HashSet<IpAddr>>,
    conns: Mutex<Vec<(IpAddr, AbortHandle)>>,
    bytes: AtomicU64,
}

impl Proxy {
    pub fn new(listen: &str, target: &str) -> Arc<Self> {
        Arc::new(Proxy {
            listen: listen.to_owned(),
            target: target.to_owned(),
            isolated: AtomicBool::new(false),
            blocked: Mutex::new(HashSet::new()),
            conns: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
        })
    }

    /// Bytes carried so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Refuses (`true`) or accepts again every connection.
    pub fn isolate(&self, on: bool) {
        self.isolated.store(on, Ordering::SeqCst);
        if on {
            self.drop_conns(|_| true);
        }
    }

    /// Refuses (`true`) or accepts again connections from `ip`.
    pub fn block(&self, ip: IpAddr, on: bool) {
        let mut blocked = self.blocked.lock().unwrap();
        if on {
            blocked.insert(ip);
        } else {
            blocked.remove(&ip);
        }
        drop(blocked);
        if on {
            self.drop_conns(|src| src == ip);
        }
    }

    fn refuses(&self, ip: IpAddr) -> bool {
        self.isolated.load(Ordering::SeqCst) || self.blocked.lock().unwrap().contains(&ip)
    }

    fn drop_conns(&self, which: impl Fn(IpAddr) -> bool) {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|(ip, task)| {
            if which(*ip) {
                task.abort();
                false
            } else {
                !task.is_finished()
            }
        });
    }

    async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((inbound, from)) = listener.accept().await else {
                continue;
            };
            if self.refuses(from.ip()) {
                continue;
            }
            let me = self.clone();
            let task = tokio::spawn(async move {
                if let Ok(outbound) = tokio::net::TcpStream::connect(&me.target).await {
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(me.pump(in_read, out_write), me.pump(out_read, in_write));
                }
            });
            let mut conns = self.conns.lock().unwrap();
            conns.retain(|(_, t)| !t.is_finished());
            conns.push((from.ip(), task.abort_handle()));
        }
    }

    async fn pump(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = to.shutdown().await;
    }
}

/// Every proxy of a test network, on a runtime of their own.
pub struct Proxies {
    pub list: Vec<Arc<Proxy>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxies {
    /// Starts `list`, each on the listener `take_reserved` hands over for its address (or a
    /// fresh bind).
    pub fn start(
        list: Vec<Arc<Proxy>>,
        take_reserved: impl Fn(&str) -> Option<StdListener>,
    ) -> anyhow::Result<Self> {
        if list.is_empty() {
            return Ok(Proxies { list, rt: None });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("proxies")
            .build()?;
        for p in &list {
            let std = match take_reserved(&p.listen) {
                Some(l) => l,
                None => StdListener::bind(&p.listen)?,
            };
            std.set_nonblocking(true)?;
            let listener = {
                let _in = rt.enter();
                tokio::net::TcpListener::from_std(std)?
            };
            rt.spawn(p.clone().run(listener));
        }
        Ok(Proxies { list, rt: Some(rt) })
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
