//! `skiff pod …`: run a Pod manifest directly on this node without a control plane (images
//! from the local store), list pods, read their logs, stop and remove them. Pod and container
//! state lives under ROOT/run (see `skiff_kubelet::local`), so every command works on what
//! earlier invocations started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skiff_kubelet::ipam::Ipv4Net;
use skiff_kubelet::local::{LocalConfig, LocalPods};
use skiff_runtime::container::ExecSpec;
use std::process::Stdio;

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Run the Pod of a manifest (YAML or JSON; `-` reads standard input).
    Run {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List pods and their containers.
    #[command(alias = "list")]
    Ls,
    /// Print a container's log.
    Logs {
        pod: String,
        /// The container (needed when the pod has several).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Run a command in a running container of a pod; exits with the command's exit code.
    Exec {
        pod: String,
        /// The container (needed when the pod has several).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Pass this terminal's standard input to the command.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Run the command on a terminal (a pty in the container); with -i, interactively.
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a pod's containers: the stop signal, then SIGKILL after the grace period.
    Stop {
        pod: String,
        /// Seconds before SIGKILL (default: the pod's terminationGracePeriodSeconds).
        #[arg(long)]
        grace: Option<u64>,
    },
    /// Remove a pod (stopping what still runs), its containers, sandbox, address and logs.
    Rm {
        #[arg(required = true)]
        pods: Vec<String>,
    },
}

/// Where new pods go: their cgroups and their network.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Pod cgroups go below this one, relative to the cgroup skiff runs in.
    #[arg(long, env = "SKIFF_CGROUP_PARENT", default_value = "skiff-pods")]
    cgroup_parent: PathBuf,
    /// Pod addresses come from this CIDR; its first address is the bridge's.
    #[arg(long, env = "SKIFF_POD_CIDR", default_value = "10.88.0.0/16")]
    pod_cidr: Ipv4Net,
    /// The bridge pods attach to (created if missing).
    #[arg(long, env = "SKIFF_BRIDGE", default_value = "skiff0")]
    bridge: String,
    /// A pinned network namespace holding the bridge (default: this process's, the host's).
    #[arg(long, env = "SKIFF_NODE_NETNS")]
    node_netns: Option<PathBuf>,
}

impl Default for NodeArgs {
    fn default() -> Self {
        NodeArgs {
            cgroup_parent: "skiff-pods".into(),
            pod_cidr: "10.88.0.0/16".parse().unwrap_or_default(),
            bridge: "skiff0".into(),
            node_netns: None,
        }
    }
}

fn open(root: &Path, node: NodeArgs) -> Result<LocalPods> {
    let cfg = LocalConfig {
        state_dir: root.join("run"),
        image_root: root.to_path_buf(),
        setup_binary: crate::setup_binary().context("finding the skiff binary")?,
        cgroup_parent: node.cgroup_parent,
        node_netns: node.node_netns,
        pod_cidr: node.pod_cidr,
        bridge: node.bridge,
        cluster_dns: None,
        host_ips: Vec::new(),
    };
    Ok(LocalPods::open(cfg)?)
}

pub fn run(root: &Path, cmd: PodCommand) -> Result<()> {
    match cmd {
        PodCommand::Run { file, node } => {
            let manifest = if file == Path::new("-") {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the manifest from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let record = open(root, node)?.run(&manifest)?;
            let ip = record
                .ip
                .map_or("host network".to_string(), |ip| ip.to_string());
            println!("started pod {} ({ip})", record.name);
        }
        PodCommand::Ls => {
            let pods = open(root, NodeArgs::default())?.list()?;
            println!(
                "{:<30} {:<20} {:<8} {:>4}  IP",
                "POD", "CONTAINER", "STATE", "EXIT"
            );
            for (pod, rows) in pods {
                let ip = pod.ip.map_or("host".to_string(), |ip| ip.to_string());
                for row in rows {
                    let exit = row.exit.map_or("-".to_string(), |c| c.to_string());
                    println!(
                        "{:<30} {:<20} {:<8} {exit:>4}  {ip}",
                        pod.name, row.name, row.state
                    );
                }
            }
        }
        PodCommand::Logs {
            pod,
            container,
            tail,
        } => {
            let lines = open(root, NodeArgs::default())?.logs(&pod, container.as_deref(), tail)?;
            for line in lines {
                println!("{}", line.text);
            }
        }
        PodCommand::Exec {
            pod,
            container,
            stdin,
            tty,
            command,
        } => {
            let pods = open(root, NodeArgs::default())?;
            let id = pods.container_id(&pod, container.as_deref())?;
            let spec = ExecSpec {
                args: command,
                env: Vec::new(),
                tty,
            };
            let code = if tty {
                let null = || Stdio::null();
                super::tty::run(pods.exec(&id, &spec, [null(), null(), null()])?, stdin)?
            } else {
                let input = if stdin {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                };
                let mut process =
                    pods.exec(&id, &spec, [input, Stdio::inherit(), Stdio::inherit()])?;
                process.wait().context("waiting for the command")?
            };
            if code != 0 {
                // The command's own exit code, as `kubectl exec` does.
                std::process::exit(code);
            }
        }
        PodCommand::Stop { pod, grace } => {
            open(root, NodeArgs::default())?.stop(&pod, grace.map(Duration::from_secs))?;
            println!("stopped pod {pod}");
        }
        PodCommand::Rm { pods } => {
            let local = open(root, NodeArgs::default())?;
            for pod in pods {
                local.remove(&pod)?;
                println!("removed pod {pod}");
            }
        }
    }
    Ok(())
}
