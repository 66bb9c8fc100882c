//! The API server's request decoders: protobuf bodies, strategic merge patches and
//! server-side apply must answer an error, never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_controlplane::apiserver::decoders;

fuzz_target!(|data: &[u8]| {
    let _ = decoders::protobuf(data);
    let mut with_magic = b"k8s\0".to_vec();
    with_magic.extend_from_slice(data);
    let _ = decoders::protobuf(&with_magic);
    // Two JSON documents split at the first NUL: an object and a patch.
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(object), Ok(patch)) = (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) else {
        return;
    };
    let _ = decoders::strategic_merge(&object, &patch);
    let _ = decoders::server_side_apply(&object, &patch, "fuzz", false);
});
