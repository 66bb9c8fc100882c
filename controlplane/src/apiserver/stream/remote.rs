//! The remote-command protocol (exec, attach) apart from its transports: the protocol
//! versions, the `Status` that ends a command on the error channel (v4 and later: JSON, so
//! that `kubectl exec -- sh -c 'exit 3'` exits 3; v2/v3: plain text), and terminal sizes as
//! kubectl streams them (`{"Width":…,"Height":…}` objects).

use serde::Deserialize;
use serde_json::{Value, json};
use skiff_api::node::Exit;

/// Remote-command versions over SPDY, in the order they are preferred.
pub const SPDY_VERSIONS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];

/// Whether the error channel of `version` carries a JSON `Status` (v4 and later).
pub fn json_status(version: &str) -> bool {
    matches!(version, "v4.channel.k8s.io" | "v5.channel.k8s.io")
}

/// Whether `version` has a resize stream (v3 and later).
pub fn has_resize(version: &str) -> bool {
    version != "v2.channel.k8s.io"
}

/// How a command ended, as the node told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The node's `exit` frame.
    Exit(Exit),
    /// The node's stream broke first.
    Broken(String),
}

/// An exit code as kubectl can read it (0–255): a negative code (killed by signal N) is
/// reported as 128+N, as shells do.
pub fn exit_code(code: i32) -> u8 {
    let code = if code < 0 {
        128 + code.saturating_neg()
    } else {
        code
    };
    u8::try_from(code & 0xff).unwrap_or(u8::MAX)
}

/// The `metav1.Status` that ends a command on the error channel (v4 and later).
pub fn status(ending: &Ending) -> Value {
    let failure = |message: &str| {
        json!({
            "metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500,
        })
    };
    match ending {
        Ending::Broken(why) => failure(why),
        Ending::Exit(exit) if !exit.error.is_empty() => failure(&exit.error),
        Ending::Exit(exit) if exit.code == 0 => json!({"metadata": {}, "status": "Success"}),
        Ending::Exit(exit) => {
            let code = exit_code(exit.code);
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
    }
}

/// What the error channel says before v4: nothing on success, else the error's text.
pub fn text_status(ending: &Ending) -> Option<String> {
    match ending {
        Ending::Broken(why) => Some(why.clone()),
        Ending::Exit(exit) if !exit.error.is_empty() => Some(exit.error.clone()),
        Ending::Exit(exit) if exit.code == 0 => None,
        Ending::Exit(exit) => Some(format!(
            "command terminated with non-zero exit code: exit status {}",
            exit_code(exit.code)
        )),
    }
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// The most a partial size object may hold before it is dropped as garbage.
const MAX_PENDING: usize = 4096;

/// Terminal sizes from the resize channel: JSON objects, possibly split or joined across
/// messages. Zero sizes (kubectl sends 0×0 when its output is not a terminal) are dropped,
/// as the kubelet drops them; garbage is dropped too.
#[derive(Debug, Default)]
pub struct ResizeParser {
    pending: Vec<u8>,
}

impl ResizeParser {
    /// Feeds bytes; answers the complete sizes among them as (width, height).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(u32, u32)> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut stream = serde_json::Deserializer::from_slice(&self.pending).into_iter::<Size>();
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    consumed = stream.byte_offset();
                    if size.width > 0 && size.height > 0 {
                        sizes.push((u32::from(size.width), u32::from(size.height)));
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.pending.len();
                    break;
                }
                None => {
                    consumed = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, error: &str) -> Ending {
        Ending::Exit(Exit {
            code,
            error: error.into(),
        })
    }

    #[test]
    fn exits_become_the_status_kubectl_reads() {
        assert_eq!(
            status(&exit(0, "")),
            json!({"metadata": {}, "status": "Success"})
        );
        let three = status(&exit(3, ""));
        assert_eq!(three["status"], "Failure");
        assert_eq!(three["reason"], "NonZeroExitCode");
        assert_eq!(
            three["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        // Killed by SIGKILL: 137, as a shell reports it.
        assert_eq!(
            status(&exit(-9, ""))["details"]["causes"][0]["message"],
            "137"
        );
        let failed = status(&exit(
            0,
            "exec: \"nope\": executable file not found in $PATH",
        ));
        assert_eq!(failed["reason"], "InternalError");
        assert_eq!(
            failed["message"],
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(status(&Ending::Broken("gone".into()))["message"], "gone");
        assert_eq!(text_status(&exit(0, "")), None);
        assert_eq!(
            text_status(&exit(2, "")).as_deref(),
            Some("command terminated with non-zero exit code: exit status 2")
        );
        assert!(json_status("v4.channel.k8s.io") && !json_status("v3.channel.k8s.io"));
        assert!(has_resize("v3.channel.k8s.io") && !has_resize("v2.channel.k8s.io"));
    }

    #[test]
    fn sizes_arrive_whole_split_or_joined() {
        let mut p = ResizeParser::default();
        assert_eq!(p.push(b"{\"Width\":80,\"Height\":24}\n"), vec![(80, 24)]);
        assert_eq!(p.push(b"{\"Width\":1"), vec![]);
        assert_eq!(
            p.push(b"00,\"Height\":30}{\"Width\":120,\"Height\":40}"),
            vec![(100, 30), (120, 40)]
        );
        assert_eq!(
            p.push(b"{\"Width\":0,\"Height\":0}"),
            vec![],
            "zero sizes dropped"
        );
        assert_eq!(p.push(b"garbage"), vec![]);
        assert_eq!(p.push(b"{\"Width\":10,\"Height\":5}"), vec![(10, 5)]);
        assert_eq!(p.push(&[b'['; 5000]), vec![]);
        assert_eq!(p.push(b"{\"Width\":11,\"Height\":6}"), vec![(11, 6)]);
    }
}
