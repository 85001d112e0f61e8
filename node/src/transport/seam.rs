//! The network seam: byte streams between nodes.
//!
//! A [`Network`] connects to an address and listens on one. tonic's channel
//! (client) is built on [`Network::connect`] through a custom connector and
//! tonic's server on [`Network::listen`] through `serve_with_incoming`, so
//! swapping the implementation swaps the wire without touching any gRPC
//! code.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;

pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncReadWrite for T {}

/// A connected byte stream.
pub struct Conn(pub Box<dyn AsyncReadWrite>);

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Accepted connections.
pub type Incoming = BoxStream<'static, io::Result<Conn>>;

/// What the network does to one Raft message. A real network decides by
/// itself, so production answers `Deliver`; the simulator's network drops,
/// delays and duplicates messages here (see `raft::network`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFate {
    Deliver,
    /// The request is lost: the sender learns nothing until its deadline.
    DropRequest,
    /// The request arrives and takes effect; the response is lost.
    DropResponse,
    /// The request leaves this much later, so later messages overtake it.
    Delay(Duration),
    /// Delivered, and a copy arrives again this much later.
    Duplicate(Duration),
}

pub trait Network: Send + Sync + 'static {
    /// Opens a stream to `addr` (`host:port`).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>>;

    /// Listens on `addr`; returns the bound address (with the real port if
    /// `addr` asked for port 0) and the accepted connections.
    fn listen(&self, addr: String) -> BoxFuture<'static, io::Result<(String, Incoming)>>;

    /// The fate of the next Raft message to `addr`.
    fn message_fate(&self, _addr: &str) -> MessageFate {
        MessageFate::Deliver
    }
}

pub type SharedNetwork = Arc<dyn Network>;

/// Operating-system TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpNetwork;

/// Keepalive probes find peers that vanished without closing the socket.
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

fn tune(s: &tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
}

impl Network for TcpNetwork {
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>> {
        async move {
            let s = tokio::net::TcpStream::connect(&addr).await?;
            tune(&s);
            Ok(Conn(Box::new(s)))
        }
        .boxed()
    }

    fn listen(&self, addr: String) -> BoxFuture<'static, io::Result<(String, Incoming)>> {
        async move {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            let bound = l.local_addr()?.to_string();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l)
                .map(|r| {
                    r.map(|s| {
                        tune(&s);
                        Conn(Box::new(s))
                    })
                })
                .boxed();
            Ok((bound, incoming))
        }
        .boxed()
    }
}
