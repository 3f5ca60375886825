//! The bound an `async fn`'s progress callback meets, with an error that
//! says why.

/// Not public API: the bound of an async function's progress callback.
/// The call's future owns the `Progress`, and a multi-threaded executor
/// may move the future between threads, so its callback must be
/// `Send + 'static`; a blocking call's callback needs neither.
#[diagnostic::on_unimplemented(
    message = "an async function's progress callback must be `Send + 'static`",
    label = "this `Progress`'s callback is not `Send + 'static`",
    note = "the call's future owns the callback and may move between threads: share state \
            through `Arc<Mutex<_>>` or read `Progress::channel()`'s messages, or make a \
            blocking call, whose callback runs on the calling thread and may be anything"
)]
pub trait AsyncProgressCallback<M>: FnMut(M) + Send + 'static {}

#[diagnostic::do_not_recommend]
impl<M, F: ?Sized + FnMut(M) + Send + 'static> AsyncProgressCallback<M> for F {}
