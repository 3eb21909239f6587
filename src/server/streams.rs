//! The executor hyper spawns each HTTP/2 stream's task on, and [`StreamCancel`], which ends
//! such a task from outside.
//!
//! hyper's h2 server polls a response body only while the client's window has room for it: a
//! stream whose client stops reading waits on flow control, and nothing its body does (not
//! even failing) is seen until the client opens its window again, which an abandoning client
//! never does. Dropping the stream's task drops its send handle, and the h2 library then resets
//! the stream (RST_STREAM CANCEL), frees what it had queued and gives its connection-level
//! window back; the connection and its other streams go on. So every stream task is spawned
//! inside a task-local scope that holds its cancel handle, and the request path, which runs in
//! that task, takes the handle with [`StreamCancel::current`].

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;

tokio::task_local! {
    static STREAM: StreamCancel;
}

/// Ends the HTTP/2 stream task it was made for (see the module docs).
#[derive(Clone, Debug)]
pub struct StreamCancel(Arc<Notify>);

impl StreamCancel {
    /// The handle of the HTTP/2 stream whose task is running, if it is one.
    pub fn current() -> Option<StreamCancel> {
        STREAM.try_with(Clone::clone).ok()
    }

    /// Ends the stream's task now, or as soon as it next yields: the stream is reset.
    pub fn cancel(&self) {
        self.0.notify_one();
    }
}

/// Spawns hyper's tasks on tokio, each with a [`StreamCancel`] of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let cancel = StreamCancel(Arc::new(Notify::new()));
        let cancelled = cancel.0.clone();
        tokio::spawn(STREAM.scope(cancel, async move {
            tokio::select! {
                biased;
                () = cancelled.notified() => {}
                () = fut => {}
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    #[tokio::test]
    async fn a_cancelled_task_is_dropped_and_others_run_on() {
        let (handles, mut got) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let dropped = Arc::new(Notify::new());
        struct OnDrop(Arc<Notify>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.notify_one();
            }
        }
        let guard = OnDrop(dropped.clone());
        let h = handles.clone();
        StreamExecutor.execute(async move {
            let _guard = guard;
            h.send(StreamCancel::current()).expect("send");
            std::future::pending::<()>().await;
        });
        StreamExecutor.execute(async move {
            let _ = done_tx.send(());
        });
        let cancel = got
            .recv()
            .await
            .expect("handle")
            .expect("inside a stream task");
        assert!(StreamCancel::current().is_none(), "outside any stream task");
        cancel.cancel();
        dropped.notified().await;
        done.await.expect("the other task ran");
    }
}
