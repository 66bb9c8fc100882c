//! `exec` probes: the worker runs the command in the container through [`ExecProber`]; exit
//! code 0 is a success, any other a failure carrying the command's output.

use std::sync::Arc;
use std::time::Duration;

use crate::probe::state::ProbeResult;

/// At most this much of a command's output goes into a failure message.
const MAX_OUTPUT: usize = 10 * 1024;

/// What an exec'd command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit code.
    pub exit_code: i32,
    /// Its stdout and stderr, interleaved as they came (only the first 10 KiB are kept).
    pub output: Vec<u8>,
}

/// Runs a command in a running container: the worker implements it with the runtime. It is
/// called on a blocking thread; it should stop the command after `timeout` (the prober gives
/// up waiting then, but cannot stop the thread).
pub trait ExecProber: Send + Sync {
    /// Runs `argv` in container `container_id`. `Err`: the command could not be run (the
    /// container is gone, …); the probe fails with that message.
    fn exec(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, String>;
}

/// Runs `argv` through `exec` on a blocking thread.
pub(super) async fn run(
    exec: &Arc<dyn ExecProber>,
    container_id: &str,
    argv: &[String],
    timeout: Duration,
) -> ProbeResult {
    let (exec, id, args) = (Arc::clone(exec), container_id.to_string(), argv.to_vec());
    let done = tokio::task::spawn_blocking(move || exec.exec(&id, &args, timeout)).await;
    let command = argv.join(" ");
    match done {
        Ok(Ok(out)) if out.exit_code == 0 => ProbeResult::Success,
        Ok(Ok(out)) => {
            let shown = &out.output[..out.output.len().min(MAX_OUTPUT)];
            let text = String::from_utf8_lossy(shown);
            let text = text.trim_end();
            ProbeResult::Failure(if text.is_empty() {
                format!("command {command:?} exited with {}", out.exit_code)
            } else {
                format!("command {command:?} exited with {}: {text}", out.exit_code)
            })
        }
        Ok(Err(msg)) => ProbeResult::Failure(format!("command {command:?} could not run: {msg}")),
        Err(join) => ProbeResult::Failure(format!("command {command:?} could not run: {join}")),
    }
}
