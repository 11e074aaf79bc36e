//! Threads the worker starts for network calls (the write pipeline's sender, the read pipeline's prefetch): they
//! start with every signal blocked, so that Postgres's signal handlers only ever run on the worker's own thread, and
//! they never touch Postgres.

/// Runs `f` (which starts a thread) with every signal blocked in the calling thread, so that the new thread starts
/// with them blocked; the caller's mask is restored afterwards.
pub(crate) fn without_signals<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain libc calls on a stack-allocated signal set; only the calling thread's mask changes.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        result
    }
}

/// Starts `f` on a thread of its own, signals blocked.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    without_signals(|| std::thread::Builder::new().name(name.into()).spawn(f))
}
