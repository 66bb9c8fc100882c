//! The SPDY/3.1 decoders port-forward and exec read kubectl's bytes with: the frame decoder
//! (header blocks through one zlib stream primed with the SPDY dictionary) and a single
//! header block must answer an error, never panic or run away, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_controlplane::apiserver::decoders;

fuzz_target!(|data: &[u8]| {
    let _ = decoders::spdy_frames(data);
    let _ = decoders::spdy_header_block(data);
});
