//! `skiff-setup`: a container's setup process (and the process of an exec into a container)
//! as a binary of its own. Every container start execs it, and it is a small fraction of the
//! `skiff` binary, so the exec costs less (docs/design/009-pod-start.md). `skiff` still does
//! the same work when run under these names, so a node with only `skiff` installed works too.

fn main() {
    skiff_runtime::container::run_if_setup_process();
    eprintln!(
        "skiff-setup: the skiff runtime runs this as {} or {}; not meant to be run by hand",
        skiff_runtime::container::SETUP_ARG0,
        skiff_runtime::container::EXEC_ARG0
    );
    std::process::exit(2);
}
