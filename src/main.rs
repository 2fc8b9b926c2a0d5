//! `meshbus`: the operator's command for the CyberMesh bus. See `meshbus --help`.
#![forbid(unsafe_code)]

use clap::Parser;
use meshbus::cli;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.log, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshbus: cannot start the async runtime: {e}");
            return cli::Exit::Failure.into();
        }
    };
    let exit = runtime.block_on(cli::run(args));
    // Background tasks (metrics server, partition tasks) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}
