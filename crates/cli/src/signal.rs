//! The signals that stop a server: Ctrl-C, and SIGTERM (what `kill` and service managers send).

use std::future::Future;

/// Listens for Ctrl-C and SIGTERM from this call on (so a signal sent as soon as the server's
/// address is printed is not lost to the default action); the future resolves at the first.
pub fn listen() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    listen().await;
}
