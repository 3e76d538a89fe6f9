//! The metrics endpoint (`--metrics-listen`): a small HTTP/1.1 server, a task on core 0, that
//! answers `GET /metrics` with every core's statistics in Prometheus's text format
//! (`crate::metrics`). Each scrape collects them over the mesh as SHOW STATS does, so no core
//! stops; one request per connection, its size and time bounded (limits.rs), and at most
//! METRICS_CONNECTIONS_MAX at once, so that no client can make core 0 hold or wait for much.

use super::core::Core;
use super::report::rss_bytes;
use super::runtime::{self, race, sleep, Either, TcpListener, TcpStream};
use crate::limits::*;
use crate::metrics::{error_response, parse_request, render, response, Process, Request, CONTENT_TYPE};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Serve scrapes on `listener` until shutdown.
pub async fn serve(core: Rc<Core>, listener: TcpListener) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match race(listener.accept(), core.shutdown.wait()).await {
            Either::Right(()) => break,
            Either::Left(Ok(s)) => s,
            Either::Left(Err(e)) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        if active.get() >= METRICS_CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let (core, active) = (core.clone(), active.clone());
        runtime::spawn(async move {
            let _ = exchange(&core, stream).await;
            active.set(active.get() - 1);
        });
    }
}

/// One request and its reply, each within its time bound; then the connection closes.
async fn exchange(core: &Core, mut stream: TcpStream) -> std::io::Result<()> {
    let read = race(read_request(&mut stream), sleep(Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS)));
    let req = match read.await {
        Either::Left(Ok(req)) => Some(req),
        Either::Left(Err(e)) => return Err(e),
        Either::Right(()) => None,
    };
    let answer = async {
        let reply = match req {
            Some(req) => reply(core, req).await,
            None => response(408, "text/plain; charset=utf-8", b"request timeout\n", false),
        };
        stream.write_all(&reply).await?;
        stream.close().await
    };
    match race(answer, sleep(Duration::from_millis(METRICS_RESPONSE_TIMEOUT_MS))).await {
        Either::Left(r) => r,
        Either::Right(()) => Ok(()),
    }
}

/// The request's head, read until it is whole; Err(TooLarge) once METRICS_REQUEST_BYTES_MAX have
/// come without it ending.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(req) = parse_request(&buf) {
            return Ok(req);
        }
        let room = METRICS_REQUEST_BYTES_MAX - buf.len();
        if room == 0 {
            return Ok(Request::TooLarge);
        }
        let n = stream.read(&mut chunk[..room.min(1024)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn reply(core: &Core, req: Request) -> Vec<u8> {
    let Request::Metrics { head_only } = req else { return error_response(&req) };
    let all = core.collect_stats().await;
    let shared = &core.shared;
    let process = Process {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: shared.started.elapsed().as_secs(),
        connections: shared.connections.load(Ordering::Relaxed) as u64,
        max_connections: shared.max_connections as u64,
        rss_bytes: rss_bytes(),
        durable: core.wal.is_some(),
    };
    response(200, CONTENT_TYPE, render(&all, &process).as_bytes(), head_only)
}
