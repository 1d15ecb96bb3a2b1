//! `tem streams serve`: a Durable Streams server, in memory or on disk, until Ctrl-C or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use streams_server::{REGISTRY_PATH, StreamServer};

use crate::say;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve Durable Streams over HTTP at /v1/stream/NAME.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  tem streams serve
      in-memory streams on 127.0.0.1:4437 (gone when the server stops)
  tem streams serve --data-dir ./streams --port 0
      streams on disk, recovered on restart; a free port (printed)
  tem streams serve --long-poll-timeout 500ms --enable-test-endpoints
      as the conformance suite and client tests want it

Try it:
  curl -X PUT -H 'Content-Type: text/plain' http://127.0.0.1:4437/v1/stream/hello
  curl -X POST -H 'Content-Type: text/plain' --data 'hi there' http://127.0.0.1:4437/v1/stream/hello
  curl 'http://127.0.0.1:4437/v1/stream/hello?offset=-1'
  curl -N 'http://127.0.0.1:4437/v1/stream/hello?offset=-1&live=sse'

With --data-dir an append is answered only once it is on disk (fdatasync, shared by concurrent
appends); after a crash the server restarts with every acknowledged append intact. One server
per directory: a second one on the same --data-dir exits with status 2, naming the first one's
pid. A full disk answers 507 until space is freed; the server need not be restarted.")]
struct ServeArgs {
    /// Address to bind; the default keeps the server private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 4437)]
    port: u16,
    /// Keep streams on disk in DIR (created if missing) instead of in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How long a long-poll read waits for data before answering 204 (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    long_poll_timeout: Duration,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Record creates and deletes as JSON messages in the stream /v1/stream/__registry__.
    #[arg(long)]
    registry: bool,
    /// Serve POST|DELETE /_test/inject-error for client tests (errors, delays, drops, corrupt bodies).
    #[arg(long)]
    enable_test_endpoints: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut builder = StreamServer::builder()
        .long_poll_timeout(args.long_poll_timeout)
        .max_body_bytes(args.max_body_bytes)
        .test_endpoints(args.enable_test_endpoints);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    if args.registry {
        builder = builder.registry(REGISTRY_PATH);
    }
    let address = format!("{}:{}", args.host, args.port);
    let server = match builder.bind(&address).await {
        Err(streams_server::Error::Locked { pid, .. }) => {
            let holder = pid.map_or_else(
                || "a process whose pid is not known yet".to_owned(),
                |pid| format!("pid {pid}"),
            );
            let dir = args
                .data_dir
                .as_deref()
                .unwrap_or_else(|| std::path::Path::new("?"));
            crate::usage!(
                "--data-dir {} is in use by another tem streams serve ({holder}); stop that one, or pass another --data-dir",
                dir.display()
            );
        }
        result => result,
    };
    let server = server.with_context(|| match &args.data_dir {
        Some(dir) => format!("could not start on {address} with --data-dir {}", dir.display()),
        None => format!("could not listen on {address} (is the port taken? try --port 0)"),
    })?;
    say!("streams server listening on {}", server.url());
    match &args.data_dir {
        Some(dir) => say!(
            "  streams are kept in {} (durable: appends are fsynced before they are acknowledged)",
            dir.display()
        ),
        None => say!("  streams are kept in memory (pass --data-dir DIR to keep them)"),
    }
    say!(
        "  streams live at {}/v1/stream/NAME; stop with Ctrl-C",
        server.url()
    );
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        crate::signal::wait_for_stop().await;
        stop.cancel();
    });
    server.wait().await.context("the server failed")?;
    let _ = writeln!(std::io::stderr(), "streams server stopped");
    Ok(ExitCode::SUCCESS)
}
