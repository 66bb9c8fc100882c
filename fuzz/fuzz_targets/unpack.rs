//! Fuzzes the layer unpacker with arbitrary (possibly compressed) tar bytes: it may refuse, but
//! never panics and never writes outside the layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::unpack::unpack_layer;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = dir.path().join("layer");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&layer).expect("layer dir");
    std::fs::create_dir(&outside).expect("outside dir");
    let _ = unpack_layer(data, &layer);
    let leaked: Vec<_> = std::fs::read_dir(&outside).expect("outside").collect();
    assert!(leaked.is_empty(), "wrote outside the layer: {leaked:?}");
    let siblings = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(siblings, 2, "created something beside the layer");
});
