//! The dapr-rs e2e test app: a small HTTP server for pods, plus client subcommands that tests
//! run inside a pod with `kubectl exec` (the image has no shell or other tools).
//!
//! ```text
//! e2e-app [serve]                 serve on $APP_PORT (default 8080)
//! e2e-app get URL [TIMEOUT_MS]    GET URL, print the body; exit 0 on 2xx, 1 on other status, 2 on failure
//! e2e-app resolve NAME            print NAME's addresses, one per line; exit 2 if it does not resolve
//! ```

mod client;
mod server;

use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["serve"] => match server::serve().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("e2e-app: {e}");
                ExitCode::from(2)
            }
        },
        ["get", url] => client::get_command(url, Duration::from_secs(5)).await,
        ["get", url, ms] => match ms.parse::<u64>() {
            Ok(ms) => client::get_command(url, Duration::from_millis(ms)).await,
            Err(_) => usage(&format!("TIMEOUT_MS must be a number, got {ms:?}")),
        },
        ["resolve", name] => client::resolve_command(name).await,
        _ => usage(&format!("unknown arguments {args:?}")),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("e2e-app: {problem}\nusage: e2e-app [serve] | get URL [TIMEOUT_MS] | resolve NAME");
    ExitCode::from(64)
}
