//! Fuzzes the image reference parser: never panics, and what it accepts prints back to a
//! string that parses to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    if let Ok(reference) = Reference::parse(input) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed).expect("a normalised reference parses");
        assert_eq!(again, reference, "normalising is idempotent for {input:?}");
    }
});
