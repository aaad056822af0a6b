//! What both node processes do around their node, defined once: logging set up from the node
//! config (`RUST_LOG` overrides the level), the stop signal (SIGTERM or Ctrl-C), and durable
//! small-file writes (the records of joined channels).

use crate::node_config::LogSettings;

/// Installs the process's tracing subscriber: `RUST_LOG` if set, else `log.level`; JSON lines
/// when `log.format` is `json`. Colour only when `ansi` (a terminal). A second call does
/// nothing.
pub fn init_tracing(log: &LogSettings, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Completes on SIGTERM or Ctrl-C: when a node process must stop gracefully.
pub async fn terminate() {
    #[cfg(unix)]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `node` on a fresh multi-threaded runtime until it returns, then gives the runtime one
/// second to end what is left (storage is durable by then: a connection being torn down must
/// not hold the exit).
pub fn block_on_node<T, E: From<std::io::Error>>(
    node: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(node);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Writes `bytes` to `path` so that after a crash the file is either absent or whole: a
/// temporary file, fsynced, renamed over `path`, and the directory fsynced.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// What `orderer health` and `peer health` check: the node's plain-HTTP ops endpoint at
/// `ops` (host:port) answers 200 on `/healthz` (the process serves) or, with `ready`, on
/// `/readyz` (it can do its work now). For container health checks in images with no shell
/// or curl. Connect, write and read each have a 3 s deadline. `Ok` carries the body; `Err`
/// says why, in words (the status and body, or the connection failure).
pub fn probe_ops(ops: &str, ready: bool) -> Result<String, String> {
    use std::io::Read as _;
    use std::io::Write as _;
    use std::net::ToSocketAddrs as _;
    let deadline = std::time::Duration::from_secs(3);
    let path = if ready { "/readyz" } else { "/healthz" };
    let addr = ops
        .to_socket_addrs()
        .map_err(|e| format!("--ops {ops:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--ops {ops:?}: no address"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, deadline).map_err(|e| format!("{ops}: {e}"))?;
    stream
        .set_read_timeout(Some(deadline))
        .and_then(|()| stream.set_write_timeout(Some(deadline)))
        .map_err(|e| format!("{ops}: {e}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {ops}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("{ops}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{ops}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let code = answer.split_whitespace().nth(1).unwrap_or("(no status)");
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    if code == "200" {
        Ok(body)
    } else {
        Err(format!("{ops}{path}: {code} {body}"))
    }
}

#[cfg(test)]
mod probe_tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Read as _;
    use std::io::Write as _;

    /// An HTTP server on port 0 answering each request with `answers` in turn; its address.
    fn server(answers: Vec<&'static str>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn probe_passes_on_200_and_names_the_status_and_body_otherwise() {
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 20\r\n\r\nchannel c: no leader",
        ]);
        assert_eq!(super::probe_ops(&addr, false), Ok("ok".to_owned()));
        let e = super::probe_ops(&addr, true).unwrap_err();
        assert!(e.contains("/readyz: 503 channel c: no leader"), "{e}");
    }

    #[test]
    fn probe_of_a_closed_port_says_so() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = super::probe_ops(&addr, false).unwrap_err();
        assert!(e.starts_with(&addr), "{e}");
        assert!(super::probe_ops("no-port", false)
            .unwrap_err()
            .contains("--ops"));
    }
}
