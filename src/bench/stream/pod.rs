//! `skiff bench stream --node pod`: the same paths through a real node. A `skiff up` in a
//! network namespace of the bench's (`bench/cluster.rs`) runs a busybox pod whose echo
//! server is `nc -ll -p 7000 -e cat` (a `cat` per connection); kubectl port-forwards to it
//! and execs `cat` in it, against a direct TCP connection from the namespace to the pod's
//! address over the node's bridge.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Kubectl, POD, POD_PORT, through_tcp};
use crate::bench::cluster::{self, IMAGE};
use crate::bench::https::Conn;

const PATIENCE: Duration = Duration::from_secs(120);

async fn call(conn: &mut Conn, method: &str, path: &str, body: Vec<u8>) -> Result<(u16, Value)> {
    let json = "application/json";
    let (status, reply) = conn.call(method, path, json, json, body).await?;
    Ok((
        status,
        serde_json::from_slice(&reply).unwrap_or(Value::Null),
    ))
}

/// Creates the echo pod and returns its address once it runs and echoes.
async fn start_pod(conn: &mut Conn) -> Result<SocketAddr> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD},
        "spec": {"containers": [{"name": "echo", "image": IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": ["nc", "-ll", "-p", POD_PORT.to_string(), "-e", "cat"]}]},
    });
    let (status, reply) = call(
        conn,
        "POST",
        "/api/v1/namespaces/default/pods",
        serde_json::to_vec(&pod)?,
    )
    .await?;
    if status != 201 {
        bail!("creating pod {POD}: {status} {reply}");
    }
    let deadline = Instant::now() + PATIENCE;
    let path = format!("/api/v1/namespaces/default/pods/{POD}");
    let ip: IpAddr = loop {
        let (_, pod) = call(conn, "GET", &path, Vec::new()).await?;
        let status = &pod["status"];
        if status["phase"] == "Running"
            && let Some(ip) = status["podIP"].as_str()
        {
            break ip.parse().with_context(|| format!("podIP {ip:?}"))?;
        }
        if status["phase"] == "Failed" || Instant::now() > deadline {
            bail!("pod {POD} did not run: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let addr = SocketAddr::new(ip, POD_PORT);
    // nc listens a moment after the container is Running.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = through_tcp(addr, 1).await {
        if Instant::now() > deadline {
            return Err(e.context(format!("the echo server at {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(addr)
}

/// Deletes the pod (gracefully) and waits until it is gone.
async fn delete_pod(conn: &mut Conn) -> Result<()> {
    let path = format!("/api/v1/namespaces/default/pods/{POD}");
    call(conn, "DELETE", &path, Vec::new()).await?;
    let deadline = Instant::now() + PATIENCE;
    while call(conn, "GET", &path, Vec::new()).await?.0 != 404 {
        if Instant::now() > deadline {
            bail!("pod {POD} was not deleted");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Samples (MB/s) of each path of `super::PATHS`, through a fresh cluster's pod.
pub async fn measure(
    options: cluster::Options,
    program: PathBuf,
    mb: usize,
    runs: usize,
) -> Result<Vec<Vec<f64>>> {
    cluster::with_cluster(options, move |cluster| async move {
        let mut conn = cluster.admin()?.endpoint()?.connect().await?;
        let direct = start_pod(&mut conn).await?;
        eprintln!("pod {POD} echoes at {direct}");
        let kubectl = Kubectl {
            program,
            kubeconfig: cluster.kubeconfig(),
            mb,
        };
        let samples = kubectl.measure(direct, runs).await?;
        delete_pod(&mut conn).await?;
        Ok(samples)
    })
    .await
}
