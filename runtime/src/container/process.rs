//! The process of a container from its image and its request, as Kubernetes resolves it:
//! `command` replaces the image's ENTRYPOINT, `args` its CMD, and `args` alone keeps the
//! ENTRYPOINT; the request's environment overrides the image's, variable by variable.

/// argv from the image config's Entrypoint/Cmd and the request's command/args.
pub fn resolve_args(
    entrypoint: &[String],
    cmd: &[String],
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    match (command, args) {
        (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
        (Some(command), None) => command.to_vec(),
        (None, Some(args)) => entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// The image's `KEY=value` list with the request's variables set over it (in the image's
/// order, then new ones in the request's order).
pub fn merge_env(image: &[String], request: &[(String, String)]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut out: Vec<String> = image.to_vec();
    for (k, v) in request {
        let entry = format!("{k}={v}");
        match out.iter_mut().find(|e| key(e) == *k) {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubernetes_command_and_args_table() {
        let ep = v(&["/ep"]);
        let cmd = v(&["--cmd"]);
        let c = v(&["/c"]);
        let a = v(&["--a"]);
        let cases = [
            (None, None, v(&["/ep", "--cmd"])),
            (Some(&c[..]), None, v(&["/c"])),
            (None, Some(&a[..]), v(&["/ep", "--a"])),
            (Some(&c[..]), Some(&a[..]), v(&["/c", "--a"])),
        ];
        for (command, args, want) in cases {
            assert_eq!(
                resolve_args(&ep, &cmd, command, args),
                want,
                "{command:?} {args:?}"
            );
        }
        assert_eq!(resolve_args(&[], &v(&["sh"]), None, None), v(&["sh"]));
        assert_eq!(resolve_args(&[], &[], None, Some(&a[..])), v(&["--a"]));
    }

    #[test]
    fn request_env_overrides_image_env() {
        let image = v(&["PATH=/bin", "A=1"]);
        let request = vec![
            ("A".to_string(), "2".to_string()),
            ("B".to_string(), "3".to_string()),
        ];
        assert_eq!(merge_env(&image, &request), v(&["PATH=/bin", "A=2", "B=3"]));
    }
}
