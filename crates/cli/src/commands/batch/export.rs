//! `tem batch export`: the same result lines as `run-batch --output`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tem_core::http;

use super::{DbArg, find, open};

#[derive(clap::Args)]
pub struct Args {
    /// The batch code.
    code: String,
    #[command(flatten)]
    db: DbArg,
    /// Write to this file (replaced atomically) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let result = match &args.output {
        Some(path) => crate::run::export_to(&engine, &batch, path).await.map(|n| {
            eprintln!("wrote {n} result lines to {}", path.display());
        }),
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = http::export(&engine, batch.id, |line| {
                serde_json::to_writer(&mut out, line)?;
                out.write_all(b"\n")
            })
            .await;
            match written.and_then(|_| out.flush().map_err(tem_core::Error::Io)) {
                Ok(()) => Ok(()),
                // The reader went away (`| head`): what it wanted, it got.
                Err(tem_core::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    };
    engine.close().await;
    result.map(|()| ExitCode::SUCCESS)
}
