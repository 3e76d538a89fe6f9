//! The log's tasks: the writer with group commit (`--durability sync`), the periodic syncer,
//! and the drain at shutdown.

use super::*;

/// The writer: until shutdown, then whatever is left.
pub async fn run_writer(core: Rc<impl Host>, wal: Rc<Wal>) {
    match wal.mode {
        Mode::Sync => sync_loop(&*core, &wal).await,
        Mode::Periodic { interval_ms } => {
            periodic_loop(&*core, &wal, Duration::from_millis(interval_ms)).await
        }
    }
    wal.writer_done.fire();
}

/// Wait for work: a queued group, a rotation, or (when `timeout` is given) the time to sync.
async fn idle(core: &impl Host, wal: &Wal, timeout: Option<Duration>) {
    if !wal.queue.borrow().is_empty() || wal.rotate.borrow().is_some() {
        return;
    }
    let kick = wal.kick.borrow().clone();
    match timeout {
        Some(t) => {
            let _ = race(kick.wait(), race(sleep(t), core.shutdown().wait())).await;
        }
        None => {
            let _ = race(kick.wait(), core.shutdown().wait()).await;
        }
    }
}

/// `--durability sync`: group N+1 is written while group N is fdatasynced, so the disk is
/// never idle while writes wait, and each write waits for about one sync, not two.
async fn sync_loop(core: &impl Host, wal: &Wal) {
    // Written, its fdatasync not yet issued or done.
    let mut unsynced: Option<(Queued, u64)> = None;
    loop {
        if unsynced.is_none() {
            if wal.queue.borrow().is_empty() && wal.rotate.borrow().is_none() && core.shutdown().is_fired() {
                return;
            }
            idle(core, wal, None).await;
        }
        *wal.kick.borrow_mut() = Rc::new(LocalSignal::default());
        // A rotation goes first once nothing is unsynced in the old log; under a steady stream of
        // writes the queue is never empty, so it must not wait for that.
        let rotating = wal.rotate.borrow().is_some();
        if rotating && unsynced.is_none() {
            let rotate = wal.rotate.borrow_mut().take();
            if let Some(slot) = rotate {
                slot.put(wal.rotate_now().await);
            }
            continue;
        }
        let next = if rotating { None } else { wal.queue.borrow_mut().pop_front() };
        let file = wal.file.borrow().clone();
        match (unsynced.take(), next) {
            (None, None) => {}
            (None, Some(mut n)) => {
                let start = wal.written_end.get();
                match wal.write_group(&mut n).await {
                    Ok(()) => unsynced = Some((n, start)),
                    Err(e) => wal.fail_from(core, vec![n], start, &e).await,
                }
            }
            (Some((prev, prev_start)), None) => match sync(wal, file).await {
                Ok(()) => prev.group.settle(true),
                Err(e) => wal.fail_from(core, vec![prev], prev_start, &e).await,
            },
            (Some((prev, prev_start)), Some(mut n)) => {
                let start = wal.written_end.get();
                let (synced, written) =
                    futures_lite::future::zip(sync(wal, file), wal.write_group(&mut n)).await;
                match (synced, written) {
                    (Ok(()), Ok(())) => {
                        prev.group.settle(true);
                        unsynced = Some((n, start));
                    }
                    (Ok(()), Err(e)) => {
                        prev.group.settle(true);
                        wal.fail_from(core, vec![n], start, &e).await;
                    }
                    (Err(e), _) => wal.fail_from(core, vec![prev, n], prev_start, &e).await,
                }
            }
        }
    }
}

async fn sync(wal: &Wal, file: Option<Rc<File>>) -> Result<(), String> {
    let file = file.ok_or("the log is closed")?;
    let started = Instant::now();
    wal.io(file.fdatasync()).await.map_err(|e| format!("fdatasync: {e}"))?;
    wal.syncs.set(wal.syncs.get() + 1);
    wal.sync_us.set(wal.sync_us.get() + started.elapsed().as_micros() as u64);
    Ok(())
}

/// `--durability periodic`: groups are written as they come (acknowledged already) and the log
/// is synced every `interval`.
async fn periodic_loop(core: &impl Host, wal: &Wal, interval: Duration) {
    let mut dirty = false;
    let mut last_sync = Instant::now();
    loop {
        if wal.queue.borrow().is_empty()
            && wal.rotate.borrow().is_none()
            && !dirty
            && core.shutdown().is_fired()
        {
            return;
        }
        idle(core, wal, dirty.then(|| interval.saturating_sub(last_sync.elapsed()))).await;
        *wal.kick.borrow_mut() = Rc::new(LocalSignal::default());
        let rotate = wal.rotate.borrow_mut().take();
        if let Some(slot) = rotate {
            slot.put(wal.rotate_now().await);
        }
        let next = wal.queue.borrow_mut().pop_front();
        if let Some(mut p) = next {
            let start = wal.written_end.get();
            match wal.write_group(&mut p).await {
                Ok(()) => {
                    dirty = true;
                    p.group.settle(true);
                }
                Err(e) => {
                    // The writes were acknowledged already; they stay in memory and the
                    // operator hears of it. The groups queued behind it are not written either:
                    // the log stays a prefix of what was appended (a cluster core's later Raft
                    // records after lost ones would be a log no replica had).
                    let mut failed = vec![p];
                    failed.extend(wal.queue.borrow_mut().drain(..));
                    wal.storage_errors.set(wal.storage_errors.get() + failed.len() as u64);
                    tracing::error!(shard = wal.shard, error = %e, groups = failed.len(), "a log write failed (periodic durability): recent writes are in memory only");
                    wal.rewind(start, failed[0].first_seq).await;
                    for p in failed {
                        p.group.settle(false);
                    }
                }
            }
        }
        if dirty && (last_sync.elapsed() >= interval || core.shutdown().is_fired()) {
            let file = wal.file.borrow().clone();
            if let Err(e) = sync(wal, file).await {
                wal.storage_errors.set(wal.storage_errors.get() + 1);
                tracing::error!(shard = wal.shard, error = %e, "fdatasync failed (periodic durability)");
            }
            dirty = false;
            last_sync = Instant::now();
        }
    }
}

/// Wait until the writer has written and synced everything queued (at shutdown).
pub async fn drained(wal: &Wal) {
    wal.writer_done.wait().await;
}
