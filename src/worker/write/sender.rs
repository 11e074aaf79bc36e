//! The thread that talks to Salesforce while the worker's main thread records outcomes as they come and watches for
//! signals. Postgres delivers its signals (SIGTERM, SIGHUP, latch wake-ups) to whichever thread does not block
//! them, and its handlers must run on the main thread: the sender, and the threads it starts (which inherit its
//! mask), block every signal.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pgforce_core::delivery::batch::{Batch, Verdict};
use pgforce_core::delivery::send::send_waves;
use pgforce_core::salesforce::{CallError, Client};

/// A delivery in flight: verdicts arrive on `verdicts` as requests complete; `abort` stops it from starting more.
pub struct Sender {
    pub verdicts: Receiver<Vec<(usize, Verdict)>>,
    /// Bulk jobs just created, with the item keys each carries: the worker keeps each id (`_bulk_jobs`, its
    /// changes marked) and answers whether it could.
    pub jobs: Receiver<(String, Vec<usize>, SyncSender<bool>)>,
    pub abort: Arc<AtomicBool>,
    pub done: JoinHandle<Option<CallError>>,
}

/// How long a new Bulk job waits for the worker to keep its id before it is given up (aborted, sent again later).
const KEEP_JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts sending `waves` on a thread of its own, with every signal blocked.
pub fn start(client: Arc<Client>, waves: Vec<Vec<Batch>>, concurrency: usize) -> std::io::Result<Sender> {
    let (tx, verdicts) = channel();
    let (jobs_tx, jobs) = channel();
    let abort = Arc::new(AtomicBool::new(false));
    let stop = abort.clone();
    let done = crate::worker::engine::threads::without_signals(|| {
        std::thread::Builder::new().name("pgforce sender".into()).spawn(move || {
            // The receiver may be gone (the worker stopped waiting at SIGTERM): the verdict is then not recorded,
            // and the entry, still PENDING, is checked at the next start.
            let report = move |v: Vec<(usize, Verdict)>| {
                let _ = tx.send(v);
            };
            let keep_job = move |id: &str, keys: &[usize]| {
                let (ack, acked) = sync_channel(1);
                jobs_tx.send((id.to_string(), keys.to_vec(), ack)).is_ok()
                    && acked.recv_timeout(KEEP_JOB_TIMEOUT).unwrap_or(false)
            };
            send_waves(&client, waves, concurrency, &stop, &report, &keep_job)
        })
    })?;
    Ok(Sender { verdicts, jobs, abort, done })
}
