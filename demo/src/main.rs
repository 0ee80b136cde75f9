//! `healthbridge-demo`: echo server, plus the readiness-file commands used as exec probes.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use healthbridge_demo::cli::{Cli, Command, ServeArgs};
use healthbridge_demo::{echo, ready, status};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command() {
        Command::Serve(args) => serve(&cli, &args)?,
        Command::CheckReady => {
            if !ready::is_ready(&cli.ready_file) {
                eprintln!("not ready: {} is absent", cli.ready_file.display());
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::SetReady => ready::set_ready(&cli.ready_file)?,
        Command::RmReady => ready::set_unready(&cli.ready_file)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    if args.start_unready {
        ready::set_unready(&cli.ready_file)?;
    } else {
        ready::set_ready(&cli.ready_file)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = SocketAddr::new(args.address, args.port);
        let (udp, tcp) = echo::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (UDP and TCP); choose another --port"))?;
        eprintln!("healthbridge-demo: echo on {addr} (udp+tcp), ready file {}", cli.ready_file.display());
        let status_server = match args.http_port {
            Some(port) => {
                let status_addr = SocketAddr::new(args.address, port);
                let listener = tokio::net::TcpListener::bind(status_addr)
                    .await
                    .with_context(|| format!("cannot listen on {status_addr} for HTTP status; choose another --http-port"))?;
                eprintln!("healthbridge-demo: HTTP status on {status_addr}");
                Some(status::serve(listener, cli.ready_file.clone()))
            }
            None => None,
        };
        let status_server = async {
            match status_server {
                Some(server) => server.await,
                None => std::future::pending().await,
            }
        };
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            result = echo::serve_udp(udp) => result.context("udp echo stopped"),
            result = echo::serve_tcp(tcp) => result.context("tcp echo stopped"),
            result = status_server => result.context("HTTP status server stopped"),
            _ = terminate.recv() => { eprintln!("healthbridge-demo: SIGTERM, exiting"); Ok(()) }
            _ = tokio::signal::ctrl_c() => { eprintln!("healthbridge-demo: SIGINT, exiting"); Ok(()) }
        }
    })
}
