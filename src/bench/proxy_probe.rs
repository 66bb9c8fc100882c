//! The measuring end of `skiff bench proxy`: a hidden subcommand the bench starts inside a
//! network namespace (and, for the eBPF figures, inside the data plane's cgroup). It listens
//! where the backends are, then times `connect()` to each target in turn, interleaved, and
//! prints the samples as JSON on stdout.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Where to accept connections (the backends' port on every address of the netns).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// NAME=ADDR:PORT to connect to (repeatable).
    #[arg(long = "target", value_parser = parse_target)]
    targets: Vec<(String, SocketAddr)>,
    /// Timed connects per target.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Untimed connects per target first.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
}

fn parse_target(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or("expected NAME=ADDR:PORT")?;
    Ok((
        name.to_string(),
        addr.parse().map_err(|e| format!("{addr}: {e}"))?,
    ))
}

pub fn run(args: ProbeArgs) -> Result<()> {
    if args.targets.is_empty() {
        bail!("no --target");
    }
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..args.warmup + args.count {
        for (name, addr) in &args.targets {
            let start = Instant::now();
            let stream = TcpStream::connect(addr)
                .with_context(|| format!("connecting to {name} ({addr})"))?;
            let micros = start.elapsed().as_secs_f64() * 1e6;
            drop(stream);
            if round >= args.warmup {
                samples.entry(name.clone()).or_default().push(micros);
            }
        }
    }
    println!("{}", serde_json::to_string(&samples)?);
    Ok(())
}
