//! A bound on the connections a listener holds: an accepted connection
//! beyond [`CONNECTIONS_MAX`] is closed at once, so a flood of idle
//! connections cannot exhaust the node's file descriptors or memory.
//! Each accepted connection carries a permit that is returned when the
//! connection is dropped.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::sync::Semaphore;

use super::seam::Conn;
use super::seam::Incoming;

/// Connections one listener holds at once (peers and clients together).
pub const CONNECTIONS_MAX: usize = 4_096;

/// A connection and the permit it holds.
struct Permitted {
    conn: Conn,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Permitted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Permitted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.conn).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}

/// `incoming`, holding at most `max` connections at once; the rest are
/// closed as they are accepted (counted and logged every 1,000th time).
pub fn limit_connections(incoming: Incoming, max: usize) -> Incoming {
    let permits = Arc::new(Semaphore::new(max));
    let refused = Arc::new(AtomicU64::new(0));
    incoming
        .filter_map(move |accepted| {
            let permits = permits.clone();
            let refused = refused.clone();
            async move {
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(e) => return Some(Err(e)),
                };
                match permits.try_acquire_owned() {
                    Ok(permit) => Some(Ok(Conn(Box::new(Permitted { conn, _permit: permit })))),
                    Err(_) => {
                        let n = refused.fetch_add(1, Ordering::Relaxed);
                        if n % 1_000 == 0 {
                            tracing::warn!(
                                connections_max = max,
                                refused = n + 1,
                                "connection limit reached; closing new connections"
                            );
                        }
                        None
                    }
                }
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_until_one_ends() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<std::io::Result<Conn>>();
        let conn = || Ok(Conn(Box::new(tokio::io::duplex(64).0)));
        let mut limited = limit_connections(rx.boxed(), 2);
        for _ in 0..3 {
            tx.unbounded_send(conn()).unwrap();
        }
        let first = limited.next().await.expect("first").expect("ok");
        let _second = limited.next().await.expect("second").expect("ok");
        // The third arrives while two are held: closed, never yielded.
        let third = tokio::time::timeout(std::time::Duration::from_millis(100), limited.next()).await;
        assert!(third.is_err(), "a third connection was admitted over a limit of 2");
        // Once one ends, the next is admitted.
        drop(first);
        tx.unbounded_send(conn()).unwrap();
        assert!(limited.next().await.expect("fourth").is_ok());
    }
}
