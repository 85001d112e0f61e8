//! The network seam on turmoil: node listeners and connections are
//! turmoil's simulated TCP, so partitions, latency and crashes apply to them.

use std::io;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use shadowstore_node::transport::Conn;
use shadowstore_node::transport::Incoming;
use shadowstore_node::transport::Network;

#[derive(Debug, Default, Clone, Copy)]
pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>> {
        async move {
            let s = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Conn(Box::new(s)))
        }
        .boxed()
    }

    fn listen(&self, addr: String) -> BoxFuture<'static, io::Result<(String, Incoming)>> {
        async move {
            let l = turmoil::net::TcpListener::bind(addr.as_str()).await?;
            let bound = l.local_addr()?.to_string();
            let incoming = futures::stream::unfold(l, |l| async move {
                let next = l.accept().await.map(|(s, _)| Conn(Box::new(s)));
                Some((next, l))
            })
            .boxed();
            Ok((bound, incoming))
        }
        .boxed()
    }
}
