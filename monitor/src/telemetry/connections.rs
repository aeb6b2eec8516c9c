//! The endpoint's listener: at most `MAX_CONNECTIONS` open connections, each closed when idle,
//! so clients that stall or trickle cannot keep a probe waiting.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Connections served at once. One more evicts the oldest, so clients that trickle a request
/// out byte by byte (which the idle timeout never ends) cannot keep a probe waiting.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// A connection that sends or takes nothing for this long is closed, so a client that stalls
/// mid-request holds neither a connection slot nor shutdown. (Short in tests, which wait for it.)
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 30 });

/// Open connections, oldest first: (id, what ends it).
type Registry = Arc<std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>>;

/// A listener that holds at most `MAX_CONNECTIONS` open connections, each closed when idle; a
/// new connection beyond that ends the oldest.
pub(super) struct Bounded {
    listener: TcpListener,
    open: Registry,
    next_id: u64,
}

impl Bounded {
    pub(super) fn new(listener: TcpListener) -> Bounded {
        Bounded {
            listener,
            open: Registry::default(),
            next_id: 0,
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let end = CancellationToken::new();
                    {
                        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                        if open.len() >= MAX_CONNECTIONS
                            && let Some((_, oldest)) = open.pop_front()
                        {
                            oldest.cancel();
                        }
                        open.push_back((id, end.clone()));
                    }
                    return (
                        Conn {
                            stream,
                            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                            evicted: Box::pin(end.cancelled_owned()),
                            id,
                            open: Arc::clone(&self.open),
                        },
                        addr,
                    );
                }
                // The peer gave up before we took it: nothing to report.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of descriptors or memory: say so, and give the process time to free some.
                Err(e) => {
                    eprintln!("fimd: metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails its next read once nothing moved for `IDLE_TIMEOUT`, or once a
/// newer connection evicted it.
pub(super) struct Conn {
    stream: TcpStream,
    idle: Pin<Box<tokio::time::Sleep>>,
    evicted: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    id: u64,
    open: Registry,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(id, _)| *id != self.id);
    }
}

impl Conn {
    fn active(&mut self) {
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    /// After an I/O step: eviction ends the connection; progress restarts the idle clock; no
    /// progress fails once it ran out.
    fn step<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if self.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "metrics client evicted by a newer connection",
            )));
        }
        if r.is_ready() {
            self.active();
            return r;
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "metrics client idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.step(cx, r)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.step(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.step(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.step(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.step(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
